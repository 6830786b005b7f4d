"""Write tests/durations.json (seconds per test file) from the output of a ``pytest --durations=0`` run.

tests/conftest.py orders test files longest first with it, so the two xdist workers finish together.
Usage: ``bash scripts/test.sh -q --durations=0 > run.log; .venv/bin/python scripts/test_durations.py run.log``.
Only the order of files depends on this file; a stale one costs wall time, never a test.
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from pathlib import Path

LINE = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s+(?:setup|call|teardown)\s+(tests/[^:\s]+\.py)::")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    per_file: dict[str, float] = defaultdict(float)
    for line in Path(argv[1]).read_text(errors="replace").splitlines():
        match = LINE.match(line)
        if match:
            per_file[match.group(2)] += float(match.group(1))
    if not per_file:
        print(f"no '--durations=0' lines in {argv[1]}; run pytest with --durations=0", file=sys.stderr)
        return 1
    out = Path(__file__).resolve().parent.parent / "tests" / "durations.json"
    ranked = dict(sorted(((k, round(v, 1)) for k, v in per_file.items()), key=lambda kv: -kv[1]))
    out.write_text(json.dumps(ranked, indent=1) + "\n")
    total = sum(ranked.values())
    print(f"{out}: {len(ranked)} files, {total:.0f} s of test time; longest: "
          + ", ".join(f"{k} {v:.0f} s" for k, v in list(ranked.items())[:5]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

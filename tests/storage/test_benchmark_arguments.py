"""Hostile benchmark arguments are argparse's one-line usage error (exit 2) before any work starts.

How it showed: ``python -m benchmarks.erasure --files 0`` (also read_path, requests, requests_spark, scale)
ended in a ``ValueError`` traceback from the table build; ``benchmarks.forget_list --files 0`` silently ran
its default 200-file size; ``benchmarks.spark --files 0`` a ``CalledProcessError`` from its phase subprocess;
``benchmarks.dp_properties --tables -2`` a ``NoSuchTableError``; and an ``--out`` that cannot be written was a
``FileNotFoundError`` traceback only once the whole run was done, its numbers lost."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

COUNTED = [  # (benchmark, the count option)
    ("erasure", "--files"), ("erasure", "--rows-per-file"), ("erasure", "--commits"),
    ("read_path", "--files"), ("read_path", "--rows-per-file"), ("read_path", "--keys"),
    ("requests", "--files"), ("requests", "--rows-per-file"), ("requests", "--requests"),
    ("requests_spark", "--files"), ("requests_spark", "--subjects"),
    ("forget_list", "--files"), ("forget_list", "--rows-per-file"), ("forget_list", "--reps"),
    ("lookup", "--rows-per-file"), ("lookup", "--commits"),
    ("scale", "--files"), ("scale", "--rows-per-file"), ("scale", "--core-files"),
    ("spark", "--files"), ("spark", "--rows-per-file"), ("spark", "--ingest-rows"),
    ("dp_properties", "--tables"),
    ("lineage", "--tables"), ("lineage", "--snapshots"), ("dp", "--rows"), ("dp", "--reps"),
    ("confidential", "--rows"), ("confidential", "--synth-rows"), ("confidential_synth", "--rows"),
    # these were plain ``int``s: a 0 ran and crashed late (a median of no samples, a division by zero) or silently
    # meant the default (confidential --memo-reps)
    ("lookup", "--files"), ("lookup", "--keys"), ("lookup", "--batch-keys"), ("lookup", "--batch-reps"),
    ("lookup", "--absent-keys"), ("lookup", "--ingest-files"), ("lookup", "--ingest-reps"),
    ("scale", "--keys"), ("scale", "--cold"), ("scale", "--batch-plan-keys"), ("scale", "--batch-plan-reps"),
    ("scale", "--floor-reps"), ("scale", "--clustered-reps"), ("dp", "--ledger-reps"), ("confidential", "--memo-reps"),
    ("lineage", "--workers"), ("forget_list", "--entries"),  # 0 entries: an AssertionError after the data was built
]
WRITERS = ["confidential", "confidential_synth", "dp", "dp_properties", "erasure", "forget_list", "lineage", "lookup",
           "read_path", "requests", "requests_spark", "scale", "spark"]


def _usage_error(module: str, argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    bench = importlib.import_module(f"benchmarks.{module}")
    with pytest.raises(SystemExit) as exc:
        (getattr(bench, "parse_args", None) or bench.main)(argv)
    assert exc.value.code == 2, exc.value.code
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "error:" in err[-1], err
    return err[-1]


@pytest.mark.parametrize(("module", "option"), COUNTED)
@pytest.mark.parametrize("value", ["0", "-3"])
def test_a_count_below_one_is_a_usage_error(module: str, option: str, value: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    line = _usage_error(module, [f"{option}={value}"], capsys)
    assert option in line and ">= 1" in line, line
    assert line.startswith(f"python -m benchmarks.{module}: error:"), line  # how it is run, not 'read_path.py'


def test_scale_files_that_are_not_sizes_are_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert "comma separated" in _usage_error("scale", ["--files=abc"], capsys)


FPP = ["erasure", "lookup", "requests", "requests_spark", "scale"]


@pytest.mark.parametrize("module", FPP)
@pytest.mark.parametrize("value", ["0", "-0.1", "0.6", "1", "nan", "inf", "abc"])
def test_an_fpp_outside_what_configure_bloom_takes_is_a_usage_error(module: str, value: str,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """``--fpp 0`` (or ``nan``, ``1.5``) generated the data, then failed in ``ip.configure_bloom`` with a traceback."""
    line = _usage_error(module, [f"--fpp={value}"], capsys)
    assert "--fpp" in line and ("(0, 0.5]" in line or "not a number" in line), line


LISTS = [  # (benchmark, option, value): comma-separated lists were int()/float() tracebacks, some after the build
    ("lookup", "--sweep", "abc"), ("lookup", "--sweep", "10,-1"), ("lookup", "--sweep", "10,0"),
    ("dp", "--ledger-sizes", "10,x"), ("dp", "--ledger-sizes", "0,10"), ("lineage", "--sweep-workers", "1,two"),
    ("lineage", "--sweep-workers", "0"), ("requests", "--journal-history", "a,b"),
    # each size is the median of the 20 submits before it: '5,10' was a median of 5, then of 10 overlapping them
    ("requests", "--journal-history", "5,10"), ("requests", "--journal-history", "20,30"), ("scale", "--clustered-sweep", "x"),
    ("scale", "--index", "nonsense"), ("lineage", "--root-share", "nan"), ("lineage", "--root-share", "0"),
    ("read_path", "--row-group-rows", "-1"), ("confidential", "--synth-columns", "1"),
    ("confidential", "--synth-columns", "11"), ("confidential_synth", "--columns", "11"),
    ("s3_proxy", "--upstream", "nonsense"), ("s3_proxy", "--port", "99999"),  # OverflowError / later failures
    ("lookup", "--out", "/tmp/r.png"),  # the chart (out.with_suffix('.png')) overwrote the JSON just written
    ("requests_spark", "--master", "locl[2]"),  # Spark refused it once both tables were built
]


@pytest.mark.parametrize(("module", "option", "value"), LISTS)
def test_a_malformed_list_or_value_is_a_usage_error(module: str, option: str, value: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    required = ["--upstream", "http://127.0.0.1:1"] if module == "s3_proxy" and option != "--upstream" else []
    line = _usage_error(module, [*required, f"{option}={value}"], capsys)
    assert option in line, line


def test_the_documented_list_forms_still_parse() -> None:
    """``--sweep=`` (no sweep) is in docs/benchmarks.md's ingest-only command; the defaults are lists."""
    from benchmarks import lookup

    assert lookup.parse_args(["--sweep="]).sweep == []
    assert lookup.parse_args([]).sweep == [10, 100]
    assert lookup.parse_args(["--quick"]).sweep == []
    assert lookup.parse_args(["--fpp", "0.5"]).fpp == 0.5


@pytest.mark.parametrize("module", WRITERS)
def test_an_out_that_cannot_be_written_is_refused_before_the_run(module: str, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    line = _usage_error(module, ["--out", str(blocker / "result.json")], capsys)  # its folder would be a file
    assert "--out" in line and "cannot create the folder" in line, line
    line = _usage_error(module, ["--out", str(tmp_path)], capsys)
    assert "is a directory" in line, line


@pytest.mark.parametrize("module", WRITERS)
def test_an_out_that_names_a_file_other_than_a_result_is_refused(module: str, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """``--out README.md`` (a typo, or the chart's name) overwrote that file with the JSON at the end of the run."""
    notes = tmp_path / "notes.md"
    notes.write_text("# my notes\n")
    line = _usage_error(module, ["--out", str(notes)], capsys)
    assert "--out" in line and "is not a JSON result" in line, line
    assert notes.read_text() == "# my notes\n"


def test_an_earlier_result_or_an_empty_file_may_be_overwritten(tmp_path: Path) -> None:
    from benchmarks.harness import output_file

    (tmp_path / "old.json").write_text('{"fpp": 0.001}\n')
    (tmp_path / "empty.json").write_text("")
    for name in ("old.json", "empty.json", "new.json"):
        assert output_file(str(tmp_path / name)) == tmp_path / name


def test_dp_properties_unwritable_out_fails_before_measuring(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The cheapest end-to-end case: the old code measured, then raised FileNotFoundError at the write."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    _usage_error("dp_properties", ["--tables", "1", "--releases", "0", "--out", str(blocker / "r.json")], capsys)
    assert "property_bytes" not in capsys.readouterr().out


def test_a_benchmark_ended_by_sigterm_removes_its_temp_dirs_and_server(tmp_path: Path) -> None:
    """``timeout 20 python -m benchmarks.lookup --store s3 --quick`` left ``/tmp/ip-bench-s3-*`` (the SeaweedFS data)
    behind: Python's default SIGTERM skips ``finally`` and ``atexit``. Stopped once its first lookup is logged."""
    import os
    import signal
    import subprocess
    import sys

    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.lookup", "--store", "s3", "--quick", "--out",
                             str(tmp_path / "out" / "r.json")], cwd=Path(__file__).resolve().parents[2], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "key 1/" in line:
                break
        else:
            pytest.fail(f"the benchmark ended before its first lookup (exit {proc.wait()})")
        assert any(p.name.startswith("ip-bench-") for p in tmp_path.iterdir())
        proc.send_signal(signal.SIGTERM)
        proc.stderr.read()
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    left = sorted(p.name for p in tmp_path.iterdir())  # weed's glog files too: they go to the server's weed.log
    assert left == ["out"], left


@pytest.mark.parametrize(("module", "argv", "dest", "value"), [
    ("lookup", ["--files", "200"], "files", 200), ("lookup", ["--sweep", "10"], "sweep", [10]),
    ("erasure", ["--one-rounds", "5"], "one_rounds", 5), ("requests", ["--requests", "300"], "requests", 300),
    ("requests", ["--journal-history", "30,60"], "journal_sizes", [30, 60]), ("scale", ["--files", "200,400"], "sizes", [200, 400]),
    ("scale", ["--core-files", "200"], "core_files", 200), ("requests_spark", ["--subjects", "30"], "subjects", 30),
])
def test_quick_keeps_the_sizes_given_on_the_command_line(module: str, argv: list[str], dest: str, value: object) -> None:
    """``--quick --files 200`` ran 100 files (the quick size overwrote the option) while the JSON's ``command`` said
    ``--files 200``; the benchmarks that read ``args.rows or quick_default`` (dp, spark, ...) already kept it."""
    bench = importlib.import_module(f"benchmarks.{module}")
    assert getattr(bench.parse_args(["--quick", *argv]), dest) == value
    quick, full = bench.parse_args(["--quick"]), bench.parse_args([])
    assert quick.files != full.files  # the quick sizes still apply to what was not given


@pytest.mark.parametrize("fails", [False, True])
def test_the_spark_benchmark_removes_its_work_dir(fails: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``benchmarks.spark`` left ``$TMPDIR/ip-bench-spark-*`` (its input Parquet files and the three phases' catalogs)
    after every run, and after a phase that failed. The Spark phases are stood in for: what is checked is the
    parent's clean-up."""
    import subprocess
    import tempfile

    from benchmarks import spark

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def phase(args: object, work: Path, name: str, master: str) -> dict[str, object]:
        assert work.parent == tmp_path and (work / "ingest-src").is_dir()
        if fails:
            raise subprocess.CalledProcessError(1, ["python", "-m", "benchmarks.spark", "--phase", name])
        return {"speedup_vs_no_pushdown": 12.0, "median_seconds": {"bloom": 1.0, "plain": 1.0}, "bloom_overhead": 0.0}

    monkeypatch.setattr(spark, "_subprocess", phase)
    args = spark.parse_args(["--quick", "--ingest-rows", "800"])
    if fails:
        with pytest.raises(subprocess.CalledProcessError):
            spark.run(args)
    else:
        assert spark.run(args)["lookup.speedup_vs_no_pushdown"] == 12.0
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("module", ["erasure", "lineage", "lookup", "read_path", "requests", "requests_spark", "scale"])
def test_a_workdir_that_holds_something_is_refused_before_the_run(module: str, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """``--workdir ~/.iceberg-privacy`` overwrote that home's HMAC secret (``init_secret(overwrite=True)``), and a
    second run into the same folder died on ``NamespaceAlreadyExistsError`` after generating the data."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "secret").write_text("the user's own secret")
    line = _usage_error(module, ["--workdir", str(home)], capsys)
    assert "--workdir" in line and "is not empty" in line, line
    assert (home / "secret").read_text() == "the user's own secret"
    line = _usage_error(module, ["--workdir", str(home / "secret")], capsys)
    assert "is not a directory" in line, line


@pytest.mark.parametrize("module", ["erasure", "lookup", "requests", "requests_spark", "scale"])
def test_a_new_or_empty_workdir_is_taken(module: str, tmp_path: Path) -> None:
    bench = importlib.import_module(f"benchmarks.{module}")
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "empty", tmp_path / "new" / "sub"):
        assert bench.parse_args(["--workdir", str(folder)]).workdir == folder


def test_more_subjects_than_the_table_holds_is_one_error_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``benchmarks.erasure --thousand 100000`` on a small table (likewise scale --keys, requests_spark --subjects,
    lookup --sweep) built both tables, then died on numpy's "Cannot take a larger sample than population"."""
    import tempfile

    from benchmarks import erasure

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(SystemExit) as exc:
        erasure.main(["--files", "2", "--rows-per-file", "20", "--commits", "1", "--thousand", "100000", "--skip-forget",
                      "--out", str(tmp_path / "out" / "r.json")])
    assert "--one-rounds + --thousand needs 100,003 distinct users" in str(exc.value.code), exc.value.code
    assert "larger table (--files, --rows-per-file)" in str(exc.value.code)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # its temp dir removed


def test_timed_variants_take_turns_going_first() -> None:
    """``harness.turns``: which variant of a timed pair runs first alternates by round (``service.overhead_vs_direct``
    timed the service second in every round, on the caches the direct call had just warmed)."""
    from benchmarks.harness import turns

    pair = ["direct", "service"]
    assert [turns(pair, i) for i in range(4)] == [pair, pair[::-1], pair, pair[::-1]]
    assert pair == ["direct", "service"]  # the caller's list is left as it is
    assert [turns("abc", i)[0] for i in range(2)] == ["a", "c"]

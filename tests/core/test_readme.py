"""The README's quick start and CLI examples, run literally (copy-pasted by the test, not retyped).

Why: a new user's first contact is copying these lines; a renamed keyword, a changed report field or a
command that needs an undocumented flag breaks them silently unless they run. Each ``EXPR  # VALUE`` line of
the Python block, whose comment starts with a Python literal, is checked to give that value. The CLI block
runs on the embedded default and, with ``default-catalog: lake`` in ``~/.pyiceberg.yaml``, on SeaweedFS's
REST catalog with an ``s3://`` warehouse (the README's ``ip.connect("lake")`` line instead of ``ip.connect()``).
"""

from __future__ import annotations

import ast
import json
import shlex
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from iceberg_privacy.cli import main

README = Path(__file__).resolve().parents[2] / "README.md"
SECRET = "readme-test-secret-0123456789"


def _blocks() -> tuple[str, list[str]]:
    """(the quick start's Python block, the CLI example lines)."""
    blocks: list[tuple[str, list[str]]] = []
    current: list[str] | None = None
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            if current is None:
                current = []
                blocks.append((line[3:].strip(), current))
            else:
                current = None
        elif current is not None:
            current.append(line)
    python = next("\n".join(body) for lang, body in blocks if lang == "python")
    cli = [line for lang, body in blocks if lang == "" for line in body if line.startswith("iceberg-privacy ")]
    assert python and cli
    return python, cli


def _checked(code: str) -> str:
    """``EXPR  # LITERAL ...`` lines become ``assert (EXPR) == LITERAL`` (the expression still runs once)."""
    out = []
    for line in code.splitlines():
        expr, sep, comment = line.partition("  #")
        if sep and expr.strip() and not line.startswith(" "):
            try:
                body = ast.parse(expr.strip()).body
                is_expr = len(body) == 1 and isinstance(body[0], ast.Expr)
            except SyntaxError:
                is_expr = False
            literal = _leading_literal(comment.strip())
            if is_expr and literal is not None:
                line = f"assert ({expr.strip()}) == {literal!r}, {line!r}"
        out.append(line)
    return "\n".join(out)


def _leading_literal(comment: str) -> Any:
    for end in range(len(comment), 0, -1):
        try:
            return ast.literal_eval(comment[:end])
        except (ValueError, SyntaxError):
            continue
    return None


def _events(path: Path) -> None:
    pq.write_table(pa.table({"user_id": ["ann", "cy"], "clicks": pa.array([7, 9], pa.int64())}), path)


def _run_cli(lines: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    outputs = {}
    for line in lines:
        argv = shlex.split(line.split("  #")[0])[1:]
        code = main(["-q", *argv])
        captured = capsys.readouterr()
        assert code == 0, f"{line}\n{captured.err}"
        outputs[line] = captured.out
    return outputs


def _readme(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *,
            lake: bool) -> None:
    python, cli = _blocks()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ICEBERG_PRIVACY_HOME", raising=False)  # the embedded default: ./.iceberg-privacy
    monkeypatch.setenv("ICEBERG_PRIVACY_SECRET", SECRET)
    _events(tmp_path / "events.parquet")
    # the CLI block first: it creates db.events, which the quick start then uses (create_table_if_not_exists)
    outputs = _run_cli([c for c in cli if lake or "--catalog" not in c], capsys)
    looked_up = next(out for line, out in outputs.items() if " lookup " in line)
    assert [r["user_id"] for r in json.loads(looked_up)] == ["ann"]
    if lake:
        assert "files in snapshot" in next(out for line, out in outputs.items() if " explain " in line)
        python = python.replace("catalog = ip.connect()  ", "# ").replace("# catalog = ip.connect(\"lake\")",
                                                                          "catalog = ip.connect(\"lake\")")
        assert 'catalog = ip.connect("lake")' in python
    scope: dict[str, Any] = {}
    exec(compile(_checked(python), str(README), "exec"), scope)  # noqa: S102 - the README's own code
    catalog = scope["catalog"]
    assert catalog.name == ("lake" if lake else "default")
    table = catalog.load_table("db.events")
    assert table.location().startswith("s3://" if lake else "file://")
    assert sorted(r["user_id"] for r in table.scan().to_arrow().to_pylist()) == ["cy"]  # ann and bob erased
    assert sorted(r["who"] for r in catalog.load_table("mart.clicks").scan().to_arrow().to_pylist()) == ["CY"]
    assert (tmp_path / "exports" / "req-1" / "manifest.json").is_file()


def test_readme_quick_start_and_cli_on_the_embedded_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    _readme(tmp_path, monkeypatch, capsys, lake=False)
    assert (tmp_path / ".iceberg-privacy" / "catalog.db").is_file()


@pytest.mark.slow
def test_readme_quick_start_and_cli_on_a_rest_catalog_over_s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Its own SeaweedFS server: the README uses fixed names (db.events) and erases across the whole catalog."""
    from iceberg_privacy.testing.seaweedfs import start_seaweedfs

    server = start_seaweedfs(tmp_path / "sw")
    try:
        config = tmp_path / "config"
        config.mkdir()
        props = server.rest_catalog_properties()
        (config / ".pyiceberg.yaml").write_text(
            "default-catalog: lake\ncatalog:\n  lake:\n" + "".join(f"    {k}: '{v}'\n" for k, v in props.items()))
        monkeypatch.setenv("PYICEBERG_HOME", str(config))
        work = tmp_path / "work"
        work.mkdir()
        _readme(work, monkeypatch, capsys, lake=True)
        assert not (work / ".iceberg-privacy").exists()  # nothing fell back to the embedded catalog
    finally:
        server.stop()


# -- the docs' Python samples that need no Spark, run literally (newuser3) -------------------------------------
def _doc_block(page: str, marker: str) -> str:
    text = (README.parent / "docs" / page).read_text()
    blocks = [b for lang, b in _fenced(text) if lang == "python" and marker in b]
    assert len(blocks) == 1, f"{page}: one python block with {marker!r}"
    return blocks[0]


def _fenced(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    current: list[str] | None = None
    lang = ""
    for line in text.splitlines():
        if line.startswith("```"):
            if current is None:
                current, lang = [], line[3:].strip()
            else:
                out.append((lang, "\n".join(current)))
                current = None
        elif current is not None:
            current.append(line)
    return out


def test_docs_access_policy_and_forget_list_samples_run_as_shown(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/dp.md's access-policy block and docs/forget-list.md's block, on the tables they assume."""
    from pyiceberg.schema import Schema
    from pyiceberg.types import DoubleType, LongType, NestedField, StringType

    import iceberg_privacy as ip

    monkeypatch.setenv("ICEBERG_PRIVACY_SECRET", SECRET)
    catalog = ip.connect(home=tmp_path / "home")
    catalog.create_namespace("sales")
    catalog.create_table("sales.orders", Schema(NestedField(1, "customer_id", StringType()),
                                                NestedField(2, "country", StringType()),
                                                NestedField(3, "price", DoubleType())))
    scope: dict[str, Any] = {"ip": ip, "catalog": catalog}
    with pytest.raises(ip.DpOnlyError, match="sales.orders is dp-only"):  # its last line: "raises DpOnlyError"
        exec(_doc_block("dp.md", "ip.set_access_policy(catalog, \"sales\""), scope)  # noqa: S102
    policy = ip.access_policy(catalog, "sales.orders")
    assert policy.dp_only and policy.scope == "namespace:sales" and policy.public_keys == {"country": ["DE", "FR", "IT"]}

    catalog.create_namespace("db")
    table = catalog.create_table("db.people", Schema(NestedField(1, "user_id", StringType()),
                                                     NestedField(2, "n", LongType())))
    table = ip.configure_identity(table, ["user_id"])
    arrow = pa.table({"user_id": ["ann@example.com", "bob"], "n": pa.array([1, 2], pa.int64())})
    scope = {"catalog": catalog, "table": table, "arrow": arrow}
    exec(_doc_block("forget-list.md", "forget.add(catalog"), scope)  # noqa: S102
    assert scope["kept"].column("user_id").to_pylist() == ["bob"] and scope["dropped"] == 1

"""The lineage CLI: derive, annotate, lineage show/upstream/downstream/export, erase --follow-lineage."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

import iceberg_privacy as ip
from iceberg_privacy.cli import main
from iceberg_privacy.rights.keyed import SECRET_ENV


def run(home: Path, *argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["--home", str(home), *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, "test-secret-0123456789abcdef")
    home = tmp_path / "home"
    catalog = ip.connect(home=home)
    catalog.create_namespace("db")
    data = pa.table({"user_id": ["ann", "bob", "ann"], "faith": ["x", "y", "x"], "n": pa.array([1, 2, 3], pa.int64())})
    ip.configure_identity(catalog.create_table("db.events", schema=data.schema), ["user_id"])
    ip.append(catalog.load_table("db.events"), data)

    code, out, _ = run(home, "annotate", "db.events", "--sensitive", "faith=religion", "--purposes", "analytics",
                       capsys=capsys)
    assert code == 0 and json.loads(out)["sensitive"] == {"faith": ["religion"]}
    code, _, err = run(home, "derive", "mart.t", "--sql", "SELECT user_id AS who, faith FROM db.events",
                       "--purpose", "ads", capsys=capsys)
    assert code == 2 and "db.events -> mart.t" in err and "'ads'" in err
    sql_file = tmp_path / "q.sql"
    sql_file.write_text("SELECT user_id AS who, faith, sum(n) AS n FROM db.events GROUP BY ALL")
    code, out, _ = run(home, "derive", "mart.t", "--sql-file", str(sql_file), "--purpose", "analytics",
                       capsys=capsys)
    assert code == 0 and "identity columns ['who']" in out
    code, out, _ = run(home, "lineage", "downstream", "db.events.user_id", "--direct-only", capsys=capsys)
    assert out.split() == ["mart.t.who"]
    code, out, _ = run(home, "lineage", "upstream", "mart.t", capsys=capsys)
    assert out.split() == ["db.events"]
    code, out, _ = run(home, "lineage", "show", capsys=capsys)
    assert "mart.t  <- db.events" in out
    for fmt, name in (("openlineage", "ol.json"), ("mermaid", "g.mmd"), ("png", "g.png")):
        code, out, _ = run(home, "lineage", "export", "--format", fmt, "--out", str(tmp_path / name), capsys=capsys)
        assert code == 0 and (tmp_path / name).stat().st_size > 0
    first = json.loads((tmp_path / "ol.json").read_text().splitlines()[0])  # NDJSON: one RunEvent per line
    assert first["outputs"][0]["name"] == "mart.t"
    # `--out -` wrote a file named '-' into the current directory; it is standard output for the text formats,
    # and refused (naming what to do) where standard output cannot take the export
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(home, "lineage", "export", "--format", "mermaid", "--out", "-", capsys=capsys)
    assert code == 0 and out == (tmp_path / "g.mmd").read_text()
    code, out, _ = run(home, "lineage", "export", "--format", "openlineage", "--out", "-", capsys=capsys)
    assert code == 0 and json.loads(out.splitlines()[0])["outputs"][0]["name"] == "mart.t"
    code, _, err = run(home, "lineage", "export", "--format", "png", "--out", "-", capsys=capsys)
    assert code == 2 and "name a file" in err
    with pytest.raises(SystemExit) as usage:  # a usage error
        run(home, "access", "ann", "--out", "-", capsys=capsys)
    assert usage.value.code == 2 and "'-' is not standard output here" in capsys.readouterr().err
    assert not (tmp_path / "-").exists()
    code, out, _ = run(home, "erase", "ann", "--tables", "db.events", "--follow-lineage", capsys=capsys)
    assert code == 0 and "mart.t: 1 rows" in out
    assert catalog.load_table("mart.t").scan().to_arrow().column("who").to_pylist() == ["bob"]

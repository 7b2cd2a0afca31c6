"""`inflection plan` across two GPUs as a user runs it: the table, and JSON and CSV
reports that agree with it. Here rather than in tests/unit/test_cli_sim.py (whose
helpers it shares) because the two searches take 15-25 s on this machine."""

from __future__ import annotations

import csv
from pathlib import Path

import orjson
import pytest

from orchestrator.cli import main
from tests.unit.test_cli_sim import plan_args, table_row, wide_consoles

__all__ = ["wide_consoles"]  # the autouse fixture, applied here too


def test_plan_prints_each_gpu_and_writes_matching_json_and_csv(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(plan_args(tmp_path, "--gpus", "h100,b200", "--price", "h100=2")) == 0
    out = capsys.readouterr().out
    h100 = table_row(out, "h100")
    b200 = table_row(out, "b200")
    assert h100[0] == b200[0] == "1"  # tp
    assert float(b200[1]) > float(h100[1]) > 0  # tasks/s per replica
    assert h100[6] == f"{2.0 * int(h100[5]):.2f}"  # fleet $/h: GPUs x $/GPU-h from --price

    report = orjson.loads((tmp_path / "plan.json").read_bytes())
    assert report["query"]["model"] == "llama-3.1-8b"
    assert report["query"]["slo"] == "task_latency_p99=2.5s"
    rows = report["rows"]
    assert [(r["gpu"], r["tp"]) for r in rows] == [("h100", 1), ("b200", 1)]
    for row, printed in zip(rows, (h100, b200), strict=True):
        assert f"{row['rate_per_replica']:.2f}" == printed[1]
        assert str(row["gpus_needed"]) == printed[5]
    with (tmp_path / "plan.csv").open(newline="") as f:
        table = list(csv.DictReader(f))
    assert [(r["gpu"], int(r["tp"])) for r in table] == [("h100", 1), ("b200", 1)]
    for from_csv, from_json in zip(table, rows, strict=True):
        assert float(from_csv["rate_per_replica"]) == pytest.approx(from_json["rate_per_replica"])
        assert int(from_csv["gpus_needed"]) == from_json["gpus_needed"]
        assert float(from_csv["usd_per_million_tokens"]) == pytest.approx(
            from_json["usd_per_million_tokens"]
        )

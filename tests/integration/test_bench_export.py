"""The export benchmark runs end to end at a small size and reports every run per shape."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNS = [
    "psql \\copy row_to_json → file",
    "psql \\copy CSV HEADER → file",
    "COPY … TO /dev/null",
    "logexport → local, JSONL",
    "logexport → local, JSONL + gzip",
    "logexport → local, JSONL, 1 connection",
    "logexport → local, CSV",
    "logexport → local, CSV + gzip",
    "logexport → local, CSV, 1 connection",
]
ARGS = ["--rows", "2000", "--shapes", "seed,wide,scim", "--skip-s3", "--dispatch", "0"]


@pytest.mark.timeout(600)
def test_bench_reports_every_run_for_every_shape() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_export.py"), *ARGS],
        capture_output=True,
        text=True,
        timeout=540,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = proc.stdout
    for shape, rows in (("seed", 2000), ("wide", 2000), ("scim", 100)):
        section = out.split(f"### {shape}: {rows:,} rows", 1)[1].split("###", 1)[0]
        table = {
            cells[0]: cells[1:]
            for line in section.splitlines()
            if line.startswith("| ") and not line.startswith("| run ")
            for cells in [[c.strip() for c in line.strip("|").split("|")]]
        }
        assert sorted(table) == sorted(RUNS), (shape, section)
        for label in RUNS:
            seconds, _rate, _mbps, ratio, client_cpu, db_cpu, _rss, wait, done = table[label]
            assert float(seconds) > 0, (shape, label)
            assert float(db_cpu.replace(",", "")) >= 0, (shape, label)
            assert float(client_cpu.replace(",", "")) > 0, (shape, label)
            if label.startswith("logexport"):
                assert re.fullmatch(r"\d+\.\d\dx", ratio), (shape, label, ratio)
                assert 0 <= float(done) <= float(wait) <= float(seconds), (shape, label, wait)
        assert re.search(rf"{shape}: JSONL vs naive row_to_json \d+\.\d\dx \(1 connection", out)
        assert re.search(rf"{shape}: peak RSS \d+ MiB at [\d,]+ rows", out)

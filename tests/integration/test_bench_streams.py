"""The stream benchmark runs end to end at a small size and prints every figure."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["--interval", "2", "--rate", "20", "--duration", "4", "--catchup-rows", "3000"]


@pytest.mark.timeout(600)
def test_bench_reports_lag_and_both_catch_up_rates() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_streams.py"), *ARGS],
        capture_output=True,
        text=True,
        timeout=540,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = proc.stdout
    lag = re.search(
        r"lag: interval 2 s, 20 entries/s for 4 s: ([\d,]+) of ([\d,]+) entries delivered in "
        r"(\d+) deliveries; committed → received p50 ([\d.]+) s, p99 ([\d.]+) s, max ([\d.]+) s",
        out,
    )
    assert lag, out
    delivered, written, deliveries = (int(g.replace(",", "")) for g in lag.groups()[:3])
    assert delivered == written == 80
    assert deliveries >= 2  # at a 2 s interval, 4 s of writing spans several runs
    p50, p99, most = (float(g) for g in lag.groups()[3:])
    assert 0 < p50 <= p99 <= most
    for destination in ("HTTPS \\(127.0.0.1\\)", "S3 \\(moto, 127.0.0.1\\)"):
        caught = re.search(
            rf"catch-up {destination}: 3,000 rows in ([\d.]+) s = ([\d,]+) rows/s, (\d+) "
            r"deliveries",
            out,
        )
        assert caught, (destination, out)
        assert float(caught.group(1)) > 0
        assert int(caught.group(3)) >= 1

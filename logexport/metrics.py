"""A small Prometheus registry: counters, gauges and histograms without labels per tenant."""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field


@dataclass
class Counter:
    name: str
    help: str
    values: dict[tuple[tuple[str, str], ...], float] = field(default_factory=dict)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        self.values[key] = self.values.get(key, 0.0) + amount

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} counter"
        if not self.values:
            yield f"{self.name} 0"
        for key, value in sorted(self.values.items()):
            yield f"{self.name}{_labels(key)} {_number(value)}"


@dataclass
class Histogram:
    name: str
    help: str
    buckets: tuple[float, ...]
    counts: list[int] = field(init=False)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self.buckets, value)
        if index < len(self.counts):
            self.counts[index] += 1
        self.total += value
        self.count += 1

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} histogram"
        running = 0
        for bound, count in zip(self.buckets, self.counts):
            running += count
            yield f'{self.name}_bucket{{le="{_number(bound)}"}} {running}'
        yield f'{self.name}_bucket{{le="+Inf"}} {self.count}'
        yield f"{self.name}_sum {_number(self.total)}"
        yield f"{self.name}_count {self.count}"


@dataclass
class Gauge:
    name: str
    help: str
    read: Callable[[], float]

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} gauge"
        yield f"{self.name} {_number(self.read())}"


def _labels(key: tuple[tuple[str, str], ...]) -> str:
    if not key:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in key)
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class OpenSnapshots:
    """Export snapshots held open right now in this process, for the oldest-age gauge."""

    def __init__(self) -> None:
        self._opened: dict[int, float] = {}

    def opened(self, token: int) -> None:
        self._opened[token] = time.monotonic()

    def closed(self, token: int) -> None:
        self._opened.pop(token, None)

    def oldest_age(self) -> float:
        if not self._opened:
            return 0.0
        return time.monotonic() - min(self._opened.values())


# How an export attempt ends in a worker: its file committed, failed (to be retried or for
# good), canceled by a person while it ran, taken over after its lease ran out, or handed
# back to the queue at shutdown.
EXPORT_OUTCOMES = ("completed", "failed", "canceled", "lease_lost", "handed_back")


class WorkerMetrics:
    """What a worker process counts. Database-wide figures are read at scrape time."""

    def __init__(self) -> None:
        self.exports_finished = Counter(
            "logexport_exports_finished_total",
            "Export attempts finished, by outcome (" + ", ".join(EXPORT_OUTCOMES) + ")",
        )
        # Every outcome is shown from the start, so that a rate over it exists before the
        # first occurrence.
        for outcome in EXPORT_OUTCOMES:
            self.exports_finished.inc(0, outcome=outcome)
        self.failures = Counter("logexport_export_failures_total", "Failed export attempts")
        self.rows_written = Counter("logexport_rows_written_total", "Rows written to export files")
        self.bytes_written = Counter(
            "logexport_bytes_written_total", "Bytes written to export objects"
        )
        self.emails_sent = Counter("logexport_emails_sent_total", "Emails sent, by template")
        self.export_duration = Histogram(
            "logexport_export_duration_seconds",
            "Time from claim to stored object",
            (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
        )
        self.claim_latency = Histogram(
            "logexport_claim_latency_seconds",
            "Time from runnable to claimed",
            (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.snapshots = OpenSnapshots()
        self.oldest_snapshot = Gauge(
            "logexport_oldest_open_snapshot_seconds",
            "Age of the oldest export snapshot open in this process",
            self.snapshots.oldest_age,
        )
        self.stream_deliveries = Counter(
            "logexport_stream_deliveries_total", "Log stream deliveries, by outcome"
        )
        for outcome in ("delivered", "failed"):
            self.stream_deliveries.inc(0, outcome=outcome)
        self.stream_rows_delivered = Counter(
            "logexport_stream_rows_delivered_total", "Rows delivered by log streams"
        )
        # Per row, from its created_at (its transaction's start, a close bound on its commit
        # for short transactions) to the commit that recorded it delivered. A long
        # transaction's rows show here as the lag it caused.
        self.stream_lag = Histogram(
            "logexport_stream_delivery_lag_seconds",
            "Time from an entry's creation to its delivery by a log stream",
            (0.5, 1, 2.5, 5, 10, 30, 60, 90, 120, 300, 600, 1800, 3600, 21600, 86400),
        )

    def render(self) -> Iterable[str]:
        for metric in (
            self.exports_finished,
            self.failures,
            self.rows_written,
            self.bytes_written,
            self.emails_sent,
            self.export_duration,
            self.claim_latency,
            self.oldest_snapshot,
            self.stream_deliveries,
            self.stream_rows_delivered,
            self.stream_lag,
        ):
            yield from metric.render()

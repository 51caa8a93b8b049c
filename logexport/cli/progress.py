"""Showing an export's progress while ``--wait`` polls it.

On a terminal one line is redrawn about twice a second: status, rows written, rate and
elapsed time. Anywhere else (CI logs, pipes) a plain line is printed when the status
changes and every few seconds while rows are being written, so logs stay readable.
Everything goes to stderr: stdout carries only the result (``--json`` stays parseable).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TextIO

from logexport.client import TERMINAL_STATUSES

__all__ = ["PLAIN_INTERVAL", "TERMINAL_STATUSES", "ProgressReporter"]

PLAIN_INTERVAL = 5.0


def _rows(export: Mapping[str, object]) -> int:
    # rowsWritten is a BigInt, so it travels as a decimal string.
    value = export.get("rowsWritten") or 0
    if not isinstance(value, int | float | str):
        return 0
    try:
        return int(value)
    except ValueError:
        return 0


def _elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressReporter:
    """Fed each polled LogExport; decides what to show and when."""

    def __init__(self, stream: TextIO, *, interactive: bool) -> None:
        self.stream = stream
        self.interactive = interactive
        self.started = time.monotonic()
        self._status: str | None = None
        self._last_plain = 0.0
        self._last_rows = 0
        self._last_time = self.started
        self._rate = 0.0
        self._drawn = False

    def update(self, export: Mapping[str, object]) -> None:
        now = time.monotonic()
        rows = _rows(export)
        status = str(export.get("status"))
        if rows < self._last_rows:
            # A retry starts counting again.
            self._rate = 0.0
        elif now > self._last_time:
            instant = (rows - self._last_rows) / (now - self._last_time)
            # Smoothed, so the figure does not jump with every poll.
            self._rate = instant if self._rate == 0 else 0.7 * self._rate + 0.3 * instant
        self._last_rows, self._last_time = rows, now
        if self.interactive:
            self._draw(status, rows, now)
        else:
            self._plain(status, rows, now)
        self._status = status

    def tick(self) -> None:
        """Redraw the terminal line with the time elapsed since the last change."""
        if self.interactive and self._status is not None:
            self._draw(self._status, self._last_rows, time.monotonic())

    def finish(self) -> None:
        if self.interactive and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    def _describe(self, status: str, rows: int, now: float) -> str:
        text = f"{status:<10} {rows:>12,} rows"
        if status == "PROCESSING" and self._rate > 0:
            text += f"  {self._rate:,.0f} rows/s"
        return f"{text}  {_elapsed(now - self.started)}"

    def _draw(self, status: str, rows: int, now: float) -> None:
        self.stream.write("\r\x1b[K" + self._describe(status, rows, now))
        self.stream.flush()
        self._drawn = True

    def _plain(self, status: str, rows: int, now: float) -> None:
        changed = status != self._status
        due = status == "PROCESSING" and now - self._last_plain >= PLAIN_INTERVAL
        if changed or due:
            self.stream.write(self._describe(status, rows, now) + "\n")
            self.stream.flush()
            self._last_plain = now

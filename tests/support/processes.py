"""Real ``logexport`` processes for fault tests: start, watch their log lines, signal, reap.

Each process writes its JSON log lines (stderr is not a terminal) and anything else it
prints to one file; tests wait on those lines or on database conditions with deadlines.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.keys import TEST_SIGNING_KEY

REPO_ROOT = Path(__file__).resolve().parents[2]

# ``logexport`` run by the interpreter of this test run: same virtualenv, same source tree,
# whether or not the package's script is installed.
_CLI = [sys.executable, "-c", "from logexport.cli import main; main()"]

LogLine = dict[str, Any]


def service_env(
    *,
    database_url: str,
    storage_url: str,
    smtp_url: str,
    s3_endpoint_url: str | None = None,
    base_url: str = "http://127.0.0.1:1",
    mail_from: str = "logexport@example.test",
    **overrides: str,
) -> dict[str, str]:
    """The ``LOGEXPORT_*`` environment of a ``serve``/``worker`` process, plus ``overrides``.

    ``overrides`` take setting names without the prefix: ``worker_lease="3s"`` becomes
    ``LOGEXPORT_WORKER_LEASE=3s``.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("LOGEXPORT_") and not key.startswith("PYTEST")
    }
    env.update(
        {
            "PYTHONPATH": str(REPO_ROOT),
            "PYTHONUNBUFFERED": "1",
            "LOGEXPORT_DATABASE_URL": database_url,
            "LOGEXPORT_STORAGE_URL": storage_url,
            "LOGEXPORT_SMTP_URL": smtp_url,
            "LOGEXPORT_MAIL_FROM": mail_from,
            "LOGEXPORT_BASE_URL": base_url,
            "LOGEXPORT_S3_ADDRESSING_STYLE": "path",
            "LOGEXPORT_SIGNING_KEY": TEST_SIGNING_KEY,
        }
    )
    if s3_endpoint_url:
        env["LOGEXPORT_S3_ENDPOINT_URL"] = s3_endpoint_url
    for name, value in overrides.items():
        env[f"LOGEXPORT_{name.upper()}"] = value
    return env


@dataclass(eq=False)
class ServiceProcess:
    """One running ``logexport`` command and the file its output goes to."""

    name: str
    argv: list[str]
    log_path: Path
    popen: subprocess.Popen[bytes]
    _offset: int = 0
    _lines: list[LogLine] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def lines(self) -> list[LogLine]:
        """Every line written so far; JSON lines parsed, other text as ``{"message": …}``."""
        with open(self.log_path, "rb") as stream:
            stream.seek(self._offset)
            chunk = stream.read()
        # Only whole lines: a line being written stays for the next call.
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._offset += len(complete)
        for raw in complete.decode(errors="replace").splitlines():
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = None
            self._lines.append(parsed if isinstance(parsed, dict) else {"message": raw})
        return list(self._lines)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def messages(self) -> list[str]:
        return [str(line.get("message", "")) for line in self.lines()]

    async def wait_for_line(
        self, predicate: Callable[[LogLine], bool] | str, *, timeout: float = 20.0
    ) -> LogLine:
        """The first log line matching ``predicate`` (or whose message equals it)."""
        test = (
            (lambda line: line.get("message") == predicate)
            if isinstance(predicate, str)
            else predicate
        )
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines():
                if test(line):
                    return line
            if not self.alive():
                # One last read: the process may have written the line and exited.
                for line in self.lines():
                    if test(line):
                        return line
                raise AssertionError(
                    f"{self.name} exited ({self.returncode}) before the awaited line:\n"
                    + self.tail()
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name}: no matching line within {timeout}s:\n" + self.tail()
                )
            await asyncio.sleep(0.05)

    def tail(self, count: int = 30) -> str:
        return "\n".join(self.output().splitlines()[-count:])

    def send(self, sig: signal.Signals) -> None:
        if self.alive():
            self.popen.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up."""
        if self.alive():
            self.popen.kill()
            self.popen.wait(10)

    async def wait_exit(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} still running after {timeout}s:\n{self.tail()}")
            await asyncio.sleep(0.05)
        code = self.popen.returncode
        assert code is not None
        return code

    async def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait for the exit code."""
        self.send(signal.SIGTERM)
        return await self.wait_exit(timeout)


class ProcessGroup:
    """Processes started by one test; whatever still runs at the end is killed."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.processes: list[ServiceProcess] = []

    def start(self, name: str, args: list[str], env: Mapping[str, str]) -> ServiceProcess:
        argv = [*_CLI, *args]
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(
                argv,
                cwd=REPO_ROOT,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        process = ServiceProcess(name=name, argv=argv, log_path=log_path, popen=popen)
        self.processes.append(process)
        return process

    def worker(
        self, name: str, env: Mapping[str, str], *, concurrency: int | None = None
    ) -> ServiceProcess:
        args = ["worker"]
        if concurrency is not None:
            args += ["--concurrency", str(concurrency)]
        return self.start(name, args, env)

    def serve(
        self, name: str, env: Mapping[str, str], *, port: int, worker: bool = True
    ) -> ServiceProcess:
        args = ["serve", "--host", "127.0.0.1", "--port", str(port)]
        if not worker:
            args.append("--no-worker")
        return self.start(name, args, env)

    def stop_all(self) -> None:
        for process in self.processes:
            if process.alive():
                process.popen.send_signal(signal.SIGKILL)
        for process in self.processes:
            try:
                process.popen.wait(10)
            except subprocess.TimeoutExpired:
                pass

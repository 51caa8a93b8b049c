"""``logexport`` as a subprocess, the way a person runs it, for acceptance tests."""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def logexport_command() -> list[str]:
    """The installed ``logexport`` script, or the same entry point through this interpreter."""
    installed = Path(sys.prefix) / "bin" / "logexport"
    if installed.exists():
        return [str(installed)]
    return [sys.executable, "-c", "import sys; from logexport.cli import main; sys.exit(main())"]


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


async def run_logexport(
    *args: str, env: dict[str, str], timeout: float, merge_stderr: bool = False
) -> Result:
    """Run ``logexport *args`` to completion; killed if it outlives ``timeout`` seconds.

    With ``merge_stderr`` both streams land in ``stdout`` in the order written.
    """
    process = await asyncio.create_subprocess_exec(
        *logexport_command(),
        *args,
        env=env,
        cwd=REPO,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT if merge_stderr else asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return Result(process.returncode, stdout.decode(), (stderr or b"").decode())

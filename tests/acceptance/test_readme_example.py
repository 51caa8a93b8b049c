"""The README's Python example, exactly as printed, run against real servers.

The example reads its inputs from the environment (``LOGEXPORT_*`` settings, the API's
URL and token, ``ORG_ID``), so the test runs the block from ``README.md`` unchanged, as a
script in a directory of its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import sys

from tests.support.cli import REPO, api, settings_env

MARKER = "From Python:"
TIMEOUT = 240


def readme_example() -> str:
    """The first ``python`` code block after the "From Python:" line of README.md."""
    text = (REPO / "README.md").read_text()
    assert MARKER in text, "README.md has no 'From Python:' section"
    match = re.search(r"```python\n(.*?)```", text[text.index(MARKER) :], re.DOTALL)
    assert match is not None, "no python block follows 'From Python:'"
    return match.group(1)


def test_the_example_is_found_and_is_python():
    source = readme_example()
    compile(source, "README.md", "exec")
    assert "principal" in source and "LogExportClient" in source


async def test_readme_python_example_runs_as_written(pool, settings, s3, smtp_sink, tmp_path):
    # The served API runs a worker for the example's remote part (its own Worker has
    # stopped by then); while the example's Worker runs, either may take its export.
    async with api(pool, settings, tmp_path) as server:
        script = tmp_path / "example.py"
        script.write_text(readme_example())
        workdir = tmp_path / "run"
        workdir.mkdir()
        env = {
            **os.environ,
            **settings_env(settings.derive(base_url=server.url)),
            "LOGEXPORT_API_URL": server.url,
            "LOGEXPORT_TOKEN": server.world.admin.token,
            "ORG_ID": str(server.world.organization_id),
            "PYTHONPATH": str(REPO),
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            cwd=workdir,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(), TIMEOUT)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise
        stdout, stderr = out.decode(), err.decode()
        assert process.returncode == 0, stderr[-3000:]

        lines = stdout.splitlines()
        # 90 seeded entries fall in January; the example records one more, but now.
        assert "in process: COMPLETED 90 rows" in lines, stdout
        assert "COMPLETED 90 rows written" in lines, stdout
        assert "refused: toTime: fromTime must be earlier than toTime" in lines, stdout

        async with pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT status, row_count, sha256, from_time, to_time FROM log_exports"
                " ORDER BY created_at"
            )
        assert [(r["status"], r["row_count"]) for r in rows] == [("COMPLETED", 90)] * 2
        downloaded = workdir / "january.jsonl"
        assert hashlib.sha256(downloaded.read_bytes()).hexdigest() == rows[1]["sha256"]
        assert len([json.loads(line) for line in downloaded.read_text().splitlines()]) == 90
        # The remote request's "2026-01-31" included that whole day.
        assert rows[1]["to_time"].isoformat() == "2026-02-01T00:00:00+00:00"

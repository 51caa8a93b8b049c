"""The container image, checked without a Docker engine: the Dockerfile's instructions, and
its Python layer built the same way into a scratch virtualenv."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from logexport.config import parse_duration

ROOT = Path(__file__).resolve().parents[2]
DOCKER_DEFAULT_STOP_TIMEOUT = 10.0


def _instructions() -> list[tuple[str, str]]:
    joined: list[str] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    pairs = []
    for line in joined:
        keyword, _, rest = line.partition(" ")
        pairs.append((keyword.upper(), rest.strip()))
    return pairs


def _all(keyword: str) -> list[str]:
    return [args for kw, args in _instructions() if kw == keyword]


def _last(keyword: str) -> str:
    found = _all(keyword)
    assert found, f"the Dockerfile has no {keyword}"
    return found[-1]


def _env() -> dict[str, str]:
    env: dict[str, str] = {}
    for args in _all("ENV"):
        for word in shlex.split(args):
            name, _, value = word.partition("=")
            env[name] = value
    return env


def _exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"not the exec form (no shell, signals reach it): {args}"
    return [str(word) for word in value]


def test_image_runs_as_an_unprivileged_user() -> None:
    user = _last("USER")
    assert user not in ("root", "0"), user
    uid = next(
        int(match.group(1))
        for args in _all("RUN")
        if (match := re.search(r"useradd\b.*--uid (\d+)", args))
    )
    assert user in (str(uid), "logexport")
    assert uid >= 1000


def test_image_serves_port_8000_on_every_interface() -> None:
    assert "8000" in _last("EXPOSE").split()
    env = _env()
    command = _exec_form(_last("CMD"))
    assert command[:2] == ["logexport", "serve"]
    # The CLI default stays loopback; the image overrides it, by flag or by variable.
    if "--host" in command:
        assert command[command.index("--host") + 1] == "0.0.0.0"
    else:
        assert env.get("LOGEXPORT_HOST") == "0.0.0.0"
    assert env.get("LOGEXPORT_PORT", "8000") == "8000"


def test_serve_reads_host_and_port_from_the_environment() -> None:
    # What the image's ENV relies on: `serve --help` names the variables and the CLI's
    # own default stays 127.0.0.1.
    out = subprocess.run(
        [str(Path(sys.executable).parent / "logexport"), "serve", "--help"],
        capture_output=True, text=True, check=True,
    ).stdout
    flat = " ".join(out.split())
    assert "env var: LOGEXPORT_HOST; default: 127.0.0.1" in flat
    assert "env var: LOGEXPORT_PORT; default: 8000" in flat


def test_healthcheck_probes_healthz_without_curl() -> None:
    args = _last("HEALTHCHECK")
    options, _, command = args.partition("CMD ")
    assert "--interval=" in options and "--timeout=" in options
    probe = _exec_form(command)
    assert probe[:2] == ["python", "-c"]
    assert "/healthz" in probe[2]
    assert "urllib.request.urlopen" in probe[2]
    # The probe's own timeout is shorter than Docker's, so a hung server reads as unhealthy.
    docker_timeout = float(re.search(r"--timeout=(\d+)s", options).group(1))
    probe_timeout = float(re.search(r"timeout=(\d+)\)", probe[2]).group(1))
    assert probe_timeout < docker_timeout


def test_healthcheck_command_fails_when_nothing_listens() -> None:
    probe = _exec_form(_last("HEALTHCHECK").partition("CMD ")[2])
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free_port = sock.getsockname()[1]
    result = subprocess.run(
        [sys.executable, "-c", probe[2]],
        env={"LOGEXPORT_PORT": str(free_port), "PATH": "/usr/bin:/bin"},
        capture_output=True,
    )
    assert result.returncode != 0


def test_shutdown_fits_dockers_default_stop_timeout() -> None:
    assert _last("STOPSIGNAL") == "SIGTERM"
    grace = parse_duration(_env()["LOGEXPORT_SHUTDOWN_GRACE"])
    # `serve` waits up to the grace for open requests, then up to the grace again for
    # running exports before handing them back; a couple of seconds remain to close.
    assert 2 * grace + 2 <= DOCKER_DEFAULT_STOP_TIMEOUT, grace


def test_dependencies_come_from_the_runtime_lock_with_hashes() -> None:
    runs = _all("RUN")
    lock_installs = [r for r in runs if "-r requirements-runtime.lock" in r]
    assert lock_installs and "--require-hashes" in lock_installs[0]
    assert any("pip install --no-deps ." in r for r in runs)
    # Nothing else pulls a dependency: every pip install is either the lock or --no-deps.
    for run in runs:
        for step in run.split("&&"):
            if step.strip().startswith("pip install"):
                assert "requirements-runtime.lock" in step or "--no-deps" in step, step
    assert "requirements-runtime.lock" in " ".join(_all("COPY"))
    # The lock is installed before the source is copied, so code changes reuse that layer.
    keywords = [(kw, args) for kw, args in _instructions() if kw in ("COPY", "RUN")]
    lock_run = keywords.index(("RUN", lock_installs[0]))
    assert all("logexport" not in args.split()[0] for _, args in keywords[:lock_run])


def test_locks_are_pinned_hashed_and_name_no_local_index() -> None:
    for name in ("requirements-runtime.lock", "requirements.lock"):
        text = (ROOT / name).read_text()
        requirements = re.findall(r"^([A-Za-z0-9._-]+)(\S*) \\$", text, flags=re.M)
        assert len(requirements) > 20, name
        for package, pin in requirements:
            assert pin.startswith("=="), f"{name}: {package} is not pinned"
        assert text.count("--hash=sha256:") >= len(requirements)
        body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
        assert not re.search(r"file:|index-url|find-links|/opt/|/home/|/root/", body), name
    runtime = (ROOT / "requirements-runtime.lock").read_text()
    for dev_only in ("pytest", "moto", "playwright", "hypothesis"):
        assert not re.search(rf"^{dev_only}==", runtime, flags=re.M), dev_only


def test_the_build_context_carries_what_the_dockerfile_copies() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for args in _all("COPY"):
        *sources, _dest = shlex.split(args)
        for source in sources:
            assert (ROOT / source).exists(), source
            assert source not in ignored, source


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_python_layer_builds_from_the_lock_without_dev_tools(tmp_path: Path) -> None:
    # The script replays the Dockerfile's COPY and pip steps into a scratch virtualenv and
    # checks it: the CLI runs, the schema and SQL load, `pip check` passes, and pytest,
    # moto, playwright, hypothesis are absent.
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "check_image_layer"), str(tmp_path / "image")],
        capture_output=True, text=True, timeout=880,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    venv = Path(result.stdout.strip().splitlines()[-1])
    help_text = subprocess.run(
        [str(venv / "bin" / "logexport"), "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "serve" in help_text and "migrate" in help_text
    imported = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import pytest"], capture_output=True, text=True
    )
    assert imported.returncode != 0 and "No module named 'pytest'" in imported.stderr
    # The installed versions are exactly the lock's.
    frozen = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "freeze", "--exclude-editable"],
        capture_output=True, text=True, check=True,
    ).stdout
    installed = {
        name.lower().replace("_", "-"): version
        for name, _, version in (line.partition("==") for line in frozen.splitlines())
        if version
    }
    pinned = dict(
        re.findall(
            r"^([a-z0-9._-]+)==(\S+) \\$",
            (ROOT / "requirements-runtime.lock").read_text(),
            flags=re.M,
        )
    )
    for package, version in pinned.items():
        assert installed.get(package) == version, (package, installed.get(package), version)

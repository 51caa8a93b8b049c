"""Private PostgreSQL, S3 (moto) and SMTP servers for tests, the demo and benchmarks.

Everything listens on 127.0.0.1 only, on a free port, and keeps its files under the
project's ignored ``.run/`` folder. Servers started by a process are stopped when it exits;
``python -m devtools.services up`` starts long-lived ones for the demo instead and
records them in ``.run/services.json`` (``env`` prints their settings, ``down`` stops them).

moto keeps buckets in memory: after ``S3Server.stop()``/``start()`` every bucket and object
is gone, so fault tests that restart it must create their bucket again.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import contextlib
import ctypes
import email
import email.policy
import glob
import hashlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

_PROJECT_DIR = Path(__file__).resolve().parent.parent
# Run as ``python -m`` for the long-lived SMTP sink; also how that process is recognized.
_MODULE = "devtools.services"
_LOOPBACK = "127.0.0.1"


def run_dir() -> Path:
    """``.run/`` of the checkout, or ``$LOGEXPORT_RUN_DIR`` when set."""
    configured = os.environ.get("LOGEXPORT_RUN_DIR")
    path = Path(configured) if configured else _PROJECT_DIR / ".run"
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((_LOOPBACK, port))
        except OSError:
            return False
        return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def _die_with_parent() -> None:
    """Runs in the child before exec: a test server must not outlive a killed test run."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# Servers started by this process in test mode; stopped at exit even if a run is interrupted.
_started: list[Any] = []


@atexit.register
def _stop_started() -> None:
    for service in reversed(_started):
        with contextlib.suppress(Exception):
            if isinstance(service, PostgresCluster) and service.remove_at_exit:
                service.stop(remove=True)
            else:
                service.stop()


# ------------------------------------------------------------------------------ PostgreSQL

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _quote_ident(name: str) -> str:
    # CREATE/DROP DATABASE take no parameters; names are restricted so quoting stays trivial.
    if not _IDENTIFIER.match(name):
        raise ValueError(f"unsupported database name {name!r}")
    return f'"{name}"'


def with_database(url: str, dbname: str) -> str:
    """The same server URL naming another database."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


async def create_database(admin_url: str, name: str, template: str | None = None) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        if template is None:
            await conn.execute(f"CREATE DATABASE {_quote_ident(name)}")
        elif conn.get_server_version().major >= 15:
            # FILE_COPY clones a small template several times faster than the WAL_LOG default.
            await conn.execute(
                f"CREATE DATABASE {_quote_ident(name)} TEMPLATE {_quote_ident(template)}"
                " STRATEGY FILE_COPY"
            )
        else:
            await conn.execute(
                f"CREATE DATABASE {_quote_ident(name)} TEMPLATE {_quote_ident(template)}"
            )
    finally:
        await conn.close()


async def drop_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        # FORCE: a test that leaked a connection must not keep its database alive.
        await conn.execute(f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)")
    finally:
        await conn.close()


async def database_exists(admin_url: str, name: str) -> bool:
    conn = await asyncpg.connect(admin_url)
    try:
        found = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        return found is not None
    finally:
        await conn.close()


def postgres_bin_dir() -> Path:
    """Directory holding initdb/pg_ctl: the newest /usr/lib/postgresql/*/bin, else PATH."""

    def version(path: str) -> float:
        try:
            return float(Path(path).parent.parent.name)
        except ValueError:
            return 0.0

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    raise RuntimeError(
        "PostgreSQL server binaries (initdb, pg_ctl) were not found; install the "
        "'postgresql' package or put its bin directory on PATH"
    )


def _is_root() -> bool:
    return os.geteuid() == 0


def _postgres_ids() -> tuple[int, int, set[int]]:
    """uid, primary gid and all group ids of the ``postgres`` user."""
    import grp
    import pwd

    entry = pwd.getpwnam("postgres")
    groups = {g.gr_gid for g in grp.getgrall() if "postgres" in g.gr_mem} | {entry.pw_gid}
    return entry.pw_uid, entry.pw_gid, groups


def _traversable(path: Path, uid: int, gids: set[int]) -> bool:
    """Whether ``uid`` may reach ``path`` (every ancestor searchable by it)."""
    for directory in [path, *path.parents]:
        try:
            st = directory.stat()
        except OSError:
            return False
        if st.st_uid == uid:
            ok = bool(st.st_mode & 0o100)
        elif st.st_gid in gids:
            ok = bool(st.st_mode & 0o010)
        else:
            ok = bool(st.st_mode & 0o001)
        if not ok:
            return False
    return True


def postgres_root() -> Path:
    """Where clusters live: ``.run/``, or a /tmp folder when the postgres user cannot reach it."""
    root = run_dir()
    if not _is_root():
        return root
    uid, _, gids = _postgres_ids()
    if _traversable(root, uid, gids):
        return root
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:10]
    fallback = Path(tempfile.gettempdir()) / f"logexport-{digest}"
    fallback.mkdir(exist_ok=True)
    os.chmod(fallback, 0o755)  # noqa: S103 - the postgres user must be able to enter it
    return fallback


@dataclass(eq=False)
class PostgresCluster:
    """A throw-away PostgreSQL cluster owned by this checkout.

    ``stop()`` then ``start()`` keeps the data and the port (fault tests restart it).
    ``ephemeral`` clusters are deleted by ``stop(remove=True)`` and swept when their owner
    process is gone.
    """

    name: str
    base_dir: Path = field(default=Path())
    port: int = 0
    password: str = ""
    user: str = "logexport"
    track: bool = True
    remove_at_exit: bool = False

    def __post_init__(self) -> None:
        if self.base_dir == Path():
            self.base_dir = postgres_root() / f"pg-{self.name}"
        self.bin_dir = postgres_bin_dir()
        meta = self._read_meta()
        if meta:
            self.port = self.port or int(meta["port"])
            self.password = self.password or str(meta["password"])
            self.user = str(meta.get("user", self.user))

    # ---- paths

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "postgres.log"

    @property
    def _meta_file(self) -> Path:
        return self.base_dir / "cluster.json"

    def _read_meta(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self._meta_file.read_text())
            return data
        except (OSError, ValueError):
            return None

    # ---- commands

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if _is_root():
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(
            command, cwd=self.base_dir, capture_output=True, text=True, check=False
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{args[0]} {args[1] if len(args) > 1 else ''} failed ({result.returncode}):\n"
                f"{result.stdout}{result.stderr}\n{_log_tail(self.log_file)}"
            )
        return result

    def _chown(self, path: Path) -> None:
        if _is_root():
            uid, gid, _ = _postgres_ids()
            os.chown(path, uid, gid)

    def _initdb(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.base_dir, 0o755)  # noqa: S103 - holds only the 0700 data dir and a log
        self._chown(self.base_dir)
        self.password = self.password or secrets.token_urlsafe(18)
        self.port = self.port or free_port()
        pwfile = self.base_dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        os.chmod(pwfile, 0o600)
        self._chown(pwfile)
        try:
            self._run(
                "initdb",
                "--pgdata",
                str(self.data_dir),
                "--username",
                self.user,
                "--pwfile",
                str(pwfile),
                "--auth-local",
                "trust",
                "--auth-host",
                "scram-sha-256",
                "--encoding",
                "UTF8",
                "--locale",
                "C.UTF-8",
                "--no-sync",
            )
        finally:
            pwfile.unlink(missing_ok=True)
        # Unix socket paths are limited to ~107 bytes; deep checkouts use TCP only.
        socket_dir = str(self.data_dir) if len(str(self.data_dir)) < 80 else ""
        settings = {
            "listen_addresses": _LOOPBACK,
            "unix_socket_directories": socket_dir,
            "max_connections": "200",
            # Test data is disposable: durability only costs time here.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "timezone": "UTC",
            "log_min_messages": "warning",
        }
        with (self.data_dir / "postgresql.auto.conf").open("a") as conf:
            for key, value in settings.items():
                conf.write(f"{key} = '{value}'\n")
        self._write_meta()

    def _write_meta(self) -> None:
        meta = {
            "port": self.port,
            "password": self.password,
            "user": self.user,
            "owner_pid": os.getpid(),
        }
        self._meta_file.write_text(json.dumps(meta))
        os.chmod(self._meta_file, 0o600)

    # ---- lifecycle

    def is_initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file() and self._read_meta() is not None

    def is_running(self) -> bool:
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return False
        return _pid_alive(pid)

    def start(self) -> PostgresCluster:
        if not self.is_initialized():
            if self.base_dir.exists():
                shutil.rmtree(self.base_dir)
            self._initdb()
        elif not self.is_running() and not port_is_free(self.port):
            # A persistent cluster whose port was taken meanwhile moves elsewhere.
            self.port = free_port()
            self._write_meta()
        if not self.is_running():
            self._run(
                "pg_ctl",
                "start",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-w",
                "-t",
                "60",
                "-o",
                f"-p {self.port}",
            )
        if self.track and self not in _started:
            _started.append(self)
        return self

    def stop(self, mode: str = "fast", *, remove: bool = False) -> None:
        """Stop the server (``mode="immediate"`` simulates a crash); keep data unless ``remove``."""
        if self.is_running():
            self._run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", mode, "-w", "-t", "60")
        if remove:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            if self in _started:
                _started.remove(self)

    def restart(self) -> None:
        self.stop()
        self.start()

    # ---- databases

    def url(self, dbname: str = "postgres") -> str:
        return (
            f"postgresql://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
            f"@{_LOOPBACK}:{self.port}/{dbname}"
        )

    async def create_database(self, name: str, template: str | None = None) -> str:
        await create_database(self.url(), name, template)
        return self.url(name)

    async def drop_database(self, name: str) -> None:
        await drop_database(self.url(), name)


def _read_owner(base: Path) -> int:
    return int(json.loads((base / "cluster.json").read_text())["owner_pid"])


def sweep_stale_clusters(prefix: str = "pg-test-") -> None:
    """Stop and delete clusters (and moto logs) of test runs that died without cleaning up."""
    root = postgres_root()
    for base in root.glob(prefix + "*"):
        # The owner's pid leads the name (pg-test-<pid>-…), so a cluster another run is
        # still creating (no metadata yet) is recognised as alive.
        named = base.name[len(prefix) :].split("-", 1)[0]
        try:
            owner = int(named) if named.isdigit() else _read_owner(base)
        except (OSError, ValueError, KeyError):
            with contextlib.suppress(OSError):
                if time.time() - base.stat().st_mtime < 600:
                    continue
            owner = 0
        if owner and _pid_alive(owner):
            continue
        with contextlib.suppress(Exception):
            cluster = PostgresCluster(name=base.name[3:], base_dir=base, track=False)
            cluster.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)
    for log in run_dir().glob("moto-test-*.log"):
        pid = log.stem.rsplit("-", 1)[-1]
        if pid.isdigit() and not _pid_alive(int(pid)):
            log.unlink(missing_ok=True)


# ------------------------------------------------------------------------------ S3 (moto)

S3_REGION = "us-east-1"
S3_ACCESS_KEY = "testing"
S3_SECRET_KEY = "testing"  # noqa: S105 - moto accepts any credentials


@dataclass(eq=False)
class S3Server:
    """moto in server mode over real HTTP. State is in memory: a restart forgets buckets."""

    port: int = 0
    log_file: Path | None = None
    daemon: bool = False
    pid: int | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def endpoint_url(self) -> str:
        return f"http://{_LOOPBACK}:{self.port}"

    def _answers(self) -> bool:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(self.endpoint_url + "/", timeout=1):
                return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False

    def is_running(self) -> bool:
        if self._process is not None:
            return self._process.poll() is None
        return self.pid is not None and _pid_alive(self.pid) and "moto" in _cmdline(self.pid)

    def start(self) -> S3Server:
        if self.is_running():
            return self
        self.port = self.port or free_port()
        log_file = self.log_file or run_dir() / f"moto-{self.port}.log"
        with open(log_file, "ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", _LOOPBACK, "-p", str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=self.daemon,
                preexec_fn=None if self.daemon else _die_with_parent,
            )
        self.pid = self._process.pid
        process = self._process

        def ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"moto exited early:\n{_log_tail(log_file)}")
            return self._answers()

        _wait_until(ready, 60, f"moto on port {self.port}")
        if not self.daemon and self not in _started:
            _started.append(self)
        return self

    def stop(self) -> None:
        if self._process is not None:
            if self._process.poll() is None:
                self._process.terminate()
                try:
                    self._process.wait(10)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait(10)
            self._process = None
        elif self.pid is not None and self.is_running():
            pid = self.pid
            os.kill(pid, signal.SIGTERM)
            _wait_until(lambda: not _pid_alive(pid), 10, "moto to stop")
        self.pid = None
        if not self.daemon and self.log_file is None:
            (run_dir() / f"moto-{self.port}.log").unlink(missing_ok=True)
        # The port must be reusable right away by start().
        _wait_until(lambda: port_is_free(self.port), 10, f"port {self.port} to be released")

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=S3_REGION,
            aws_access_key_id=S3_ACCESS_KEY,
            aws_secret_access_key=S3_SECRET_KEY,
        )

    def create_bucket(self, name: str) -> None:
        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass


# ------------------------------------------------------------------------------ SMTP sink


class _SinkHandler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return self.sink._receive(envelope.content)


@dataclass(eq=False)
class SmtpSink:
    """An SMTP server that keeps every message, in memory and as ``.eml`` files in ``directory``."""

    directory: Path | None = None
    host: str = _LOOPBACK
    port: int = 0
    _messages: list[EmailMessage] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _fail: int = 0
    _controller: Any = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def start(self) -> SmtpSink:
        from aiosmtpd.controller import Controller

        if self._controller is not None:
            return self
        self.port = self.port or free_port()
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        self._controller = Controller(
            _SinkHandler(self),
            hostname=self.host,
            port=self.port,
            enable_SMTPUTF8=True,
            ready_timeout=10,
        )
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def _receive(self, content: bytes) -> str:
        with self._lock:
            if self._fail > 0:
                self._fail -= 1
                return "451 4.3.0 Try again later"
            message = email.message_from_bytes(content, policy=email.policy.default)
            assert isinstance(message, EmailMessage)
            self._messages.append(message)
            if self.directory is not None:
                name = f"{time.strftime('%Y%m%dT%H%M%S')}-{len(self._messages):05d}.eml"
                (self.directory / name).write_bytes(content)
        return "250 2.0.0 OK"

    def messages(self) -> list[EmailMessage]:
        with self._lock:
            return list(self._messages)

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()

    def fail_next(self, count: int) -> None:
        """Answer the next ``count`` DATA commands with a temporary failure (451)."""
        with self._lock:
            self._fail = count

    def reset_failures(self) -> None:
        self.fail_next(0)

    async def wait_for(
        self,
        predicate: Callable[[EmailMessage], bool] = lambda _: True,
        timeout: float = 10,
    ) -> EmailMessage:
        """The first message so far (or arriving within ``timeout``) matching ``predicate``."""
        deadline = time.monotonic() + timeout
        while True:
            for message in self.messages():
                if predicate(message):
                    return message
            if time.monotonic() > deadline:
                seen = [str(m.get("Subject")) + " -> " + str(m.get("To")) for m in self.messages()]
                raise TimeoutError(
                    f"no matching email within {timeout}s; received {len(seen)}: {seen}"
                )
            await asyncio.sleep(0.05)


# ------------------------------------------------------------------------------ demo services

DEMO_BUCKET = "logexport-demo"
DEMO_DATABASE = "logexport"
DEMO_BASE_URL = "http://127.0.0.1:8000"


def _state_file() -> Path:
    return run_dir() / "services.json"


def _read_state() -> dict[str, Any]:
    try:
        state: dict[str, Any] = json.loads(_state_file().read_text())
        return state
    except (OSError, ValueError):
        return {}


def _write_state(state: dict[str, Any]) -> None:
    path = _state_file()
    path.write_text(json.dumps(state, indent=2))
    os.chmod(path, 0o600)


def _smtp_process_alive(pid: int | None) -> bool:
    return pid is not None and _pid_alive(pid) and _MODULE in _cmdline(pid)


def _start_smtp_daemon(port: int, directory: Path) -> int:
    log = run_dir() / "smtp.log"
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                _MODULE,
                "smtp",
                "--dir",
                str(directory),
                "--port",
                str(port),
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"SMTP sink exited early:\n{_log_tail(log)}")
        with socket.socket() as sock:
            sock.settimeout(1)
            return sock.connect_ex((_LOOPBACK, port)) == 0

    _wait_until(ready, 30, f"SMTP sink on port {port}")
    return process.pid


def services_up() -> dict[str, Any]:
    """Start (or reuse) the demo's PostgreSQL, S3 and SMTP servers."""
    state = _read_state()
    cluster = PostgresCluster(name="demo", track=False).start()
    if not asyncio.run(database_exists(cluster.url(), DEMO_DATABASE)):
        asyncio.run(cluster.create_database(DEMO_DATABASE))
    state["postgres"] = {"base_dir": str(cluster.base_dir), "port": cluster.port}

    s3_state = state.get("s3", {})
    s3 = S3Server(port=int(s3_state.get("port", 0)), daemon=True, pid=s3_state.get("pid"))
    if not s3.is_running():
        s3.pid = None
        if s3.port and not port_is_free(s3.port):
            s3.port = 0
        s3.start()
    s3.create_bucket(DEMO_BUCKET)  # moto forgets buckets when it restarts
    state["s3"] = {"port": s3.port, "pid": s3.pid}

    smtp_state = state.get("smtp", {})
    mail_dir = run_dir() / "mail"
    if not _smtp_process_alive(smtp_state.get("pid")):
        port = int(smtp_state.get("port", 0))
        if not port or not port_is_free(port):
            port = free_port()
        smtp_state = {"port": port, "pid": _start_smtp_daemon(port, mail_dir)}
    state["smtp"] = {**smtp_state, "dir": str(mail_dir)}
    state.setdefault("secret_key", secrets.token_urlsafe(48))
    # The dev environment's manifest signing key, kept with the rest of the state (mode
    # 0600) so that manifests signed yesterday still verify today. Any 32 random bytes are
    # an Ed25519 seed: base64url of them is what LOGEXPORT_SIGNING_KEY takes.
    state.setdefault("signing_key", dev_signing_key())
    _write_state(state)
    return state


def dev_signing_key() -> str:
    """A new ``LOGEXPORT_SIGNING_KEY`` for a development environment or a benchmark."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


def services_env(state: dict[str, Any]) -> dict[str, str]:
    cluster = PostgresCluster(
        name="demo", base_dir=Path(state["postgres"]["base_dir"]), track=False
    )
    return {
        "LOGEXPORT_DATABASE_URL": cluster.url(DEMO_DATABASE),
        "LOGEXPORT_STORAGE_URL": f"s3://{DEMO_BUCKET}/exports",
        "LOGEXPORT_S3_ENDPOINT_URL": f"http://{_LOOPBACK}:{state['s3']['port']}",
        "LOGEXPORT_S3_ADDRESSING_STYLE": "path",
        "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
        "AWS_DEFAULT_REGION": S3_REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "LOGEXPORT_SMTP_URL": f"smtp://{_LOOPBACK}:{state['smtp']['port']}",
        "LOGEXPORT_MAIL_FROM": "logexport@example.test",
        "LOGEXPORT_BASE_URL": DEMO_BASE_URL,
        "LOGEXPORT_API_URL": DEMO_BASE_URL,
        "LOGEXPORT_SECRET_KEY": state["secret_key"],
        "LOGEXPORT_SIGNING_KEY": state["signing_key"],
        "LOGEXPORT_DEV_MAIL_DIR": state["smtp"]["dir"],
    }


def services_down(purge: bool = False) -> None:
    state = _read_state()
    smtp_pid = state.get("smtp", {}).get("pid")
    if _smtp_process_alive(smtp_pid):
        os.kill(smtp_pid, signal.SIGTERM)
        _wait_until(lambda: not _pid_alive(smtp_pid), 10, "the SMTP sink to stop")
    s3_state = state.get("s3", {})
    if s3_state.get("pid"):
        S3Server(port=int(s3_state["port"]), daemon=True, pid=s3_state["pid"]).stop()
    cluster = PostgresCluster(name="demo", track=False)
    if cluster.data_dir.is_dir():
        cluster.stop(remove=purge)
    if purge:
        _state_file().unlink(missing_ok=True)
        shutil.rmtree(run_dir() / "mail", ignore_errors=True)
        (run_dir() / "smtp.log").unlink(missing_ok=True)
        if s3_state.get("port"):
            (run_dir() / f"moto-{s3_state['port']}.log").unlink(missing_ok=True)
    elif state:
        state.get("s3", {}).pop("pid", None)
        state.get("smtp", {}).pop("pid", None)
        _write_state(state)


def _serve_smtp(directory: Path, port: int) -> None:
    sink = SmtpSink(directory=directory, port=port).start()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    print(f"SMTP sink listening on {sink.url}, writing to {directory}", flush=True)
    stop.wait()
    sink.stop()


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m devtools.services",
        description="Local PostgreSQL, S3 (moto) and SMTP servers for development.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="start (or reuse) the servers in the background")
    commands.add_parser("env", help="print export lines for the running servers")
    down = commands.add_parser("down", help="stop the servers")
    down.add_argument("--purge", action="store_true", help="also delete their data")
    smtp = commands.add_parser("smtp", help="run an SMTP sink in the foreground")
    smtp.add_argument("--dir", type=Path, required=True)
    smtp.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)

    if args.command == "up":
        state = services_up()
        print(
            f"PostgreSQL 127.0.0.1:{state['postgres']['port']}, "
            f"S3 127.0.0.1:{state['s3']['port']}, SMTP 127.0.0.1:{state['smtp']['port']} "
            f"(mail in {state['smtp']['dir']})"
        )
    elif args.command == "env":
        state = _read_state()
        if "postgres" not in state or "signing_key" not in state:
            print("services are not up; run: python -m devtools.services up", file=sys.stderr)
            return 1
        for key, value in services_env(state).items():
            print(f"export {key}={shlex.quote(value)}")
    elif args.command == "down":
        services_down(purge=args.purge)
    elif args.command == "smtp":
        _serve_smtp(args.dir, args.port or free_port())
    return 0


if __name__ == "__main__":
    sys.exit(main())

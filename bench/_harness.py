"""What bench/ingest.py and bench/send.py share: child processes on free ports, a throw-away data
folder, a fresh PostgreSQL database, `rebound` commands, CPU readings, progress and results."""

import asyncio
import contextlib
import json
import os
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
PYTHON = Path(sys.executable)
REBOUND = PYTHON.parent / "rebound"  # the console script of the same virtual environment
# A fixed key: the stored secrets written by `rebound shops add` must be readable by the server.
SECRET_KEY = "bench-secret-key-not-for-production-0123456789"  # noqa: S105
RESERVED_DATABASES = {"postgres", "template0", "template1", "test", "root"}
_START = time.monotonic()


def progress(message: str) -> None:
    print(f"[{time.monotonic() - _START:6.1f}s] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def backend(database: str | None) -> str:
    return "sqlite" if database is None else database.split(":", 1)[0].split("+", 1)[0]


def rebound_env(
    home: Path, database: str | None, redis: str | None, **extra: str
) -> dict[str, str]:
    """The environment of every Rebound process in a run: its own data folder, the database and
    Redis chosen on the command line (embedded SQLite and Redis otherwise)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "REDIS_URL", "SMTP_URL", "MAIL_TRANSPORT", "APP_URL")
    }
    env.update(REBOUND_HOME=str(home), SECRET_KEY=SECRET_KEY, PYTHONUNBUFFERED="1")
    # The console script finds `app` through the virtualenv's editable install, which points at
    # the checkout that made it: from another worktree the run would measure that one's code.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    if database:
        env["DATABASE_URL"] = database
    if redis:
        env["REDIS_URL"] = redis
    env.update(extra)
    return env


@contextlib.contextmanager
def shopify_standin(domain: str, name: str) -> Iterator[tuple[str, str]]:
    """The Shopify stand-in with one store, on a free port in a thread of its own, for what
    `rebound shops add shopify` asks Shopify before it stores anything: (origin, token)."""
    from integrations.shopify.standin import ShopifyStandin, serve

    standin = ShopifyStandin()
    standin.add_shop(domain, name=name, currency="USD")
    loop = asyncio.new_event_loop()
    stopping = asyncio.Event()
    origin: list[str] = []
    ready = threading.Event()

    async def run() -> None:
        async with serve(standin) as url:
            origin.append(url)
            ready.set()
            await stopping.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(run(),), daemon=True)
    thread.start()
    if not ready.wait(30):
        raise SystemExit("the Shopify stand-in did not start")
    try:
        yield origin[0], standin.token_for(domain)
    finally:
        loop.call_soon_threadsafe(stopping.set)
        thread.join(10)


def rebound(*args: str, env: dict[str, str]) -> str:
    """Run a `rebound` command to completion; its output, or the reason it failed."""
    done = subprocess.run(
        [str(REBOUND), *args], env=env, cwd=ROOT, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"`rebound {' '.join(args[:3])} …` failed:\n{done.stderr or done.stdout}")
    return done.stdout.strip()


@contextlib.contextmanager
def data_folder(prefix: str) -> Iterator[Path]:
    # Short: the embedded Redis listens on a Unix socket inside it (paths stop near 104 bytes).
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def fresh_postgres(url: str | None) -> Iterator[None]:
    """Create the database the URL names for this run and drop it afterwards. Refuses shared
    databases and one that already exists: it may be someone else's."""
    if url is None or backend(url) not in ("postgresql", "postgres"):
        yield
        return
    import psycopg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    name = parsed.database
    if not name or name in RESERVED_DATABASES:
        raise SystemExit(
            f"name a database of the benchmark's own (e.g. rebound_bench), not {name!r}"
        )
    admin = parsed.set(drivername="postgresql", database="postgres").render_as_string(
        hide_password=False
    )
    with psycopg.connect(admin, autocommit=True) as connection:
        if connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            raise SystemExit(
                f"database {name!r} exists already; drop it (dropdb {name}) or name another"
            )
        connection.execute(f'CREATE DATABASE "{name}"')
    progress(f"created PostgreSQL database {name}")
    try:
        yield
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        progress(f"dropped PostgreSQL database {name}")


@contextlib.contextmanager
def empty_redis_db(url: str | None) -> Iterator[None]:
    """A Redis database given with --redis must be empty before the run; it is emptied after
    (the run fills it with queued jobs)."""
    if url is None:
        yield
        return
    import redis

    client = redis.Redis.from_url(url)
    keys = client.dbsize()
    if keys:
        raise SystemExit(f"the Redis database {url} holds {keys} keys; name an empty one")
    try:
        yield
    finally:
        client.flushdb()
        client.close()


def count_rows(database: str | None, home: Path, query: str) -> int:
    from sqlalchemy import create_engine, text

    sys.path.insert(0, str(ROOT))
    from app.db import database_url

    url = database or f"sqlite:///{home / 'rebound.db'}"
    engine = create_engine(database_url(url, asynchronous=False))
    try:
        with engine.connect() as connection:
            return int(connection.execute(text(query)).scalar_one())
    finally:
        engine.dispose()


class Child:
    """A long-running child process (a server, the worker, the SMTP sink) with its log in a file."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        self._log_file = log.open("wb")
        self.process = subprocess.Popen(
            command,
            env=env,
            cwd=ROOT,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def schedstat(self) -> tuple[float, float]:
        return schedstat(self.pid)

    def tail(self, lines: int = 30) -> str:
        self._log_file.flush()
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def descendants(self) -> list[int]:
        """The process ids this process started, and theirs (Linux /proc)."""
        found, pending = [], [self.pid]
        while pending:
            pid = pending.pop()
            for task in Path(f"/proc/{pid}/task").glob("*"):
                with contextlib.suppress(OSError):
                    children = [int(child) for child in (task / "children").read_text().split()]
                    found.extend(children)
                    pending.extend(children)
        return found

    def stop(self) -> None:
        """Ctrl-C, as a person stops Rebound. SIGTERM would leave the embedded Redis of
        `rebound api` running: uvicorn re-raises the signal after its shutdown and the process
        dies before the block that stops Redis ends. Whatever it started and left is ended."""
        left = []
        for pid in self.descendants() if self.alive() else []:
            with contextlib.suppress(OSError):
                left.append((pid, _command_line(pid)))
        if self.alive():
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for pid, command in left:
            with contextlib.suppress(OSError):  # gone, as it should be
                if _command_line(pid) == command:  # the same process, not a reused id
                    os.kill(pid, signal.SIGTERM)
                    progress(f"{self.name} left process {pid} running; ended it")
        self._log_file.close()

    def wait_http(self, url: str, timeout: float = 60) -> None:
        """Until GET url answers 200; fails with the log's end if the process dies first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise SystemExit(f"{self.name} stopped while starting:\n{self.tail()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310 (local)
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        raise SystemExit(f"{self.name} did not answer {url} in {timeout:.0f} s:\n{self.tail()}")


def _command_line(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def schedstat(pid: int) -> tuple[float, float]:
    """Seconds all threads of a process have run on a CPU, and have waited for one while ready
    to run (other work on the machine had it): Linux /proc/PID/task/*/schedstat."""
    ran = waited = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError):
            run_ns, wait_ns, _ = (task / "schedstat").read_text().split()
            ran += int(run_ns)
            waited += int(wait_ns)
    return ran / 1e9, waited / 1e9


def children_cpu_seconds() -> float:
    """CPU time of this process's children that have ended and were waited for."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def load_average() -> float:
    """The machine's 1-minute load average: above the core count, other work shared the CPU."""
    return round(os.getloadavg()[0], 2)


def write_results(script: str, name: str, result: dict[str, Any]) -> Path:
    """JSON next to the script (bench/*.json is git-ignored)."""
    result["cores"] = os.cpu_count()
    out = Path(script).resolve().with_name(f"{name}.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    return out


def find_py_spy() -> str | None:
    return shutil.which("py-spy") or shutil.which("py-spy", path=str(PYTHON.parent))


def py_spy(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """Sample a process for `seconds` with py-spy (when installed) into collapsed stacks."""
    binary = find_py_spy()
    if binary is None:
        progress("py-spy not found (pip install py-spy): no profile")
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [
            binary,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(int(seconds), 1)),
            "--rate",
            "200",
            "--nonblocking",
            "--format",
            "raw",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def top_frames(
    collapsed: Path, prefixes: tuple[str, ...], limit: int = 12
) -> list[tuple[str, float]]:
    """From py-spy's collapsed stacks: the share of samples each function of ours (or of a named
    library) is on the stack, its callees included, largest first."""
    totals: dict[str, int] = {}
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        samples += int(count)
        seen = set()
        for frame in stack.split(";"):
            name, _, where = frame.partition(" (")
            if not any(prefix in where for prefix in prefixes) or "app/cli.py" in where:
                continue  # the entry point is on every stack
            key = f"{name} ({where.rstrip(')').rpartition(':')[0]})"
            if key not in seen:  # a recursive function counts once per sample
                seen.add(key)
                totals[key] = totals.get(key, 0) + int(count)
    ranked = sorted(totals.items(), key=lambda item: -item[1])[:limit]
    return [(name, round(count / samples, 3)) for name, count in ranked] if samples else []

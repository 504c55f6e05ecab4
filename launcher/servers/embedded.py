"""
The embedded development server (``cache.redis.embedded=auto``, redis_dev only): when the
profile points at a loopback address where nothing answers, start a redis-server child with
AOF persistence under ``var/redis`` in the working directory, so the README's run command
works on a machine without Docker or a running Redis.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from pathlib import Path

from launcher.config.schema import CacheSettings
from launcher.config.schema import Embedded
from launcher.config.schema import Store
from launcher.errors import ConfigError
from launcher.servers.redis_process import RedisProcess
from launcher.servers.redis_process import port_is_open


log = logging.getLogger("launcher.embedded")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def maybe_start_embedded(cache: CacheSettings) -> RedisProcess | None:
    """Start the embedded server when the profile asks for it and nothing answers; else None."""
    redis = cache.redis
    if cache.store != Store.redis or redis.embedded != Embedded.auto:
        return None
    if not is_loopback(redis.host):
        return None
    host = "127.0.0.1" if redis.host == "localhost" else redis.host
    if port_is_open(host, redis.port) or (redis.host == "localhost" and _ipv6_open(redis.port)):
        return None
    if redis.ssl:
        log.warning("cache.redis.ssl=true: not starting an embedded server (it would not speak TLS)")
        return None
    workdir = Path(redis.embedded_dir).resolve() / str(redis.port)
    try:
        server = RedisProcess(workdir, port=redis.port, appendonly=True, password=redis.password or None)
    except OSError as e:  # it creates workdir: a file on the way, no permission
        raise ConfigError("cache.redis.embedded_dir", f"cannot create {workdir}: {e.strerror}") from None
    log.warning(
        "EMBEDDED REDIS: nothing answered on %s:%s, so the launcher is starting its own redis-server "
        "(%s) with AOF persistence in %s. It stops when the launcher exits; state persists in that "
        "directory. Set cache.redis.embedded=never to forbid this.",
        redis.host, redis.port, server.binary, workdir,
    )
    server.start()
    return server


def _ipv6_open(port: int) -> bool:
    try:
        with socket.create_connection(("::1", port), timeout=0.2):
            return True
    except OSError:
        return False

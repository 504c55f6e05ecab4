"""
Wait for the Redis that holds the trader's state to be there and ready, or say clearly why
it never will be.

The connect_backoff policy (launcher/retry.py: jittered exponential backoff bounded by ``timeout_s``) retries what
time can fix: connection refused, timeouts, a server still loading its dataset (LOADING),
a replica without its master (MASTERDOWN), sentinels that know no master yet. What time
cannot fix fails at once with :class:`RedisUnavailable`: rejected credentials, a TLS
mismatch between client and server, a host name that does not resolve, a database index
the server does not have. No message ever contains the password.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time

import redis
from redis.sentinel import MasterNotFoundError
from tenacity import RetryCallState

from launcher.errors import PreflightFailed
from launcher.errors import RedisUnavailable
from launcher.retry import connect_backoff
from launcher.store.connection import ConnectionSettings
from launcher.store.connection import connect


log = logging.getLogger("launcher.bootstrap")

class StillLoading(redis.exceptions.BusyLoadingError):
    """The server answers PING but reports ``loading:1`` (it is reading its AOF/RDB)."""


class WrongService(PreflightFailed):
    """The address answers as a Redis Sentinel or a Redis Cluster node where a Redis server was configured (exit 7)."""


class Fatal(Exception):
    """A failure retrying cannot fix; the message is the one line the operator sees."""


def _chain(error: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        out.append(error)
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return out


def _redact(text: str, conn: ConnectionSettings) -> str:
    for secret in (conn.password, conn.sentinel_password):
        if secret:
            text = text.replace(secret, "***")
    return " ".join(text.split())


def _speaks_tls(host: str, port: int, timeout_s: float) -> bool:
    """Whether a TLS handshake (no certificate check) succeeds at host:port."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as raw, context.wrap_socket(raw, server_hostname=host):
            return True
    except (OSError, ssl.SSLError):
        return False


def _speaks_plain_resp(host: str, port: int, timeout_s: float) -> bool:
    """Whether a plain-text PING gets a RESP reply (``+PONG``, ``-NOAUTH ...``) at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
    except OSError:
        return False
    return reply[:1] in (b"+", b"-")


def _probe_address(conn: ConnectionSettings) -> tuple[str, int] | None:
    if conn.is_sentinel or conn.is_cluster:
        return None  # the sentinels (the seeds) named the address; they answered, so TLS is not the issue
    return conn.host, conn.port


def classify(error: BaseException, conn: ConnectionSettings) -> str | None:
    """
    The one-line reason `error` cannot be fixed by waiting, or None when it is transient.
    """
    where = conn.describe()
    chain = _chain(error)
    for e in chain:
        if isinstance(e, redis.exceptions.AuthenticationError | redis.exceptions.AuthenticationWrongNumberOfArgsError):
            if not conn.password:
                return (
                    f"authentication failed at {where}: the server requires a password and none is configured "
                    "(set cache.redis.password or REDIS_PASSWORD)"
                )
            return f"authentication failed at {where}: {_redact(str(e), conn)} (check cache.redis.username/password)"
        if isinstance(e, redis.exceptions.NoPermissionError):
            return f"authenticated at {where} but not permitted: {_redact(str(e), conn)}"
        if isinstance(e, ssl.SSLCertVerificationError):
            return (
                f"TLS certificate verification failed at {where}: {e.verify_message or e.reason} "
                "(check cache.redis.ssl_ca_file and the server's certificate)"
            )
        if isinstance(e, socket.gaierror) and e.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5)):
            return f"host name does not resolve: {conn.host!r} ({e.strerror}); check cache.redis.host"
        if isinstance(e, ssl.SSLError) and not isinstance(e, ssl.SSLCertVerificationError):
            text = f"{e.reason or ''} {e}".upper()
            if "WRONG_VERSION_NUMBER" in text or "RECORD_LAYER_FAILURE" in text or "PACKET_LENGTH_TOO_LONG" in text:
                return f"TLS handshake failed at {where}: the server does not speak TLS (set cache.redis.ssl=false)"
            return f"TLS handshake failed at {where}: {_redact(str(e), conn)}"
    if any(isinstance(e, redis.exceptions.InvalidResponse) for e in chain):
        return (
            f"{where} is not a Redis server: it answered with something that is not the Redis protocol "
            "(check cache.redis.host and cache.redis.port)"
        )
    if isinstance(error, MasterNotFoundError) and "AuthenticationError" in str(error):
        return f"authentication to the sentinels failed: {_redact(str(error), conn)} (check cache.sentinel.password)"
    if isinstance(error, redis.exceptions.ResponseError) and not isinstance(
        error, redis.exceptions.BusyLoadingError | redis.exceptions.MasterDownError,
    ):
        text = _redact(str(error), conn)
        if "unknown command 'SENTINEL'" in text:
            return (
                f"{where}: the configured sentinel address is a Redis server, not a Sentinel "
                "(point cache.sentinel.nodes at the sentinels, or use cache=redis_dev for a single server)"
            )
        if "DB index is out of range" in text:
            return f"database {conn.db} does not exist on {where} (check cache.redis.db)"
        return f"{where} refused the connection setup: {text}"

    # Client/server TLS mismatch shows up as a timeout or a reset; probe to tell it apart.
    address = _probe_address(conn)
    if address is not None:
        probe_timeout = min(1.0, conn.timeout_s)
        handshake_timed_out = any("handshake" in str(e).lower() for e in chain)
        reset_or_closed = any(
            isinstance(e, ConnectionResetError) or "closed by server" in str(e).lower()
            for e in chain
        )
        if conn.ssl and (handshake_timed_out or reset_or_closed) and _speaks_plain_resp(*address, probe_timeout):
            return f"TLS handshake failed at {where}: the server speaks plain Redis, not TLS (set cache.redis.ssl=false)"
        if not conn.ssl and reset_or_closed and _speaks_tls(*address, probe_timeout):
            return f"{where} expects TLS but the client connects in plain text (set cache.redis.ssl=true)"
    return None


def _reason(error: BaseException, conn: ConnectionSettings) -> str:
    if isinstance(error, StillLoading):
        return "server is loading its dataset (LOADING)"
    if isinstance(error, redis.exceptions.BusyLoadingError):
        return "server is loading its dataset (LOADING)"
    if isinstance(error, redis.exceptions.MasterDownError):
        return "replica has lost its master (MASTERDOWN)"
    if isinstance(error, MasterNotFoundError):
        return f"no master known to the sentinels yet ({_redact(str(error), conn)})"
    return f"{type(error).__name__}: {_redact(str(error), conn)}"


def _refuse_sentinel(client: redis.Redis, conn: ConnectionSettings) -> None:
    """
    A Sentinel answers PING like a server but refuses every data command, a Cluster node every key
    of a slot it does not own (MOVED, which acl-rights would report as missing rights): say so
    before anything else.
    """
    if conn.is_sentinel or conn.is_cluster:
        return  # the client is the master the sentinels (the cluster) named
    try:
        mode = client.info("server").get("redis_mode")
    except redis.exceptions.NoPermissionError:
        return  # INFO not allowed for this user: a sentinel has no such ACL, so this is a server
    if mode == "sentinel":
        raise WrongService(
            f"{conn.describe()} is a Redis Sentinel, not a Redis server: use cache=redis_sentinel with "
            f"cache.sentinel.nodes=[{conn.host}:{conn.port}] (for mode=migrate, migrate.to=sentinel://{conn.host}:{conn.port})",
        )
    if mode == "cluster":
        raise WrongService(
            f"{conn.describe()} is a Redis Cluster node, not a single Redis server: use cache=redis_cluster with "
            f"cache.cluster.nodes=[{conn.host}:{conn.port}] (for mode=migrate, migrate.to=cluster://{conn.host}:{conn.port})",
        )


def _attempt(conn: ConnectionSettings) -> redis.Redis:
    """One connection attempt: PING, then make sure the dataset is loaded."""
    client = connect(conn)
    try:
        client.ping()
        _refuse_sentinel(client, conn)
        try:
            loading = int(client.info("persistence").get("loading", 0))
        except redis.exceptions.NoPermissionError:
            loading = 0  # INFO not allowed for this user: PING succeeding is all we can know
        if loading:
            raise StillLoading("LOADING Redis is loading the dataset in memory")
    except BaseException:
        client.close()
        raise
    return client


def wait_for_redis(conn: ConnectionSettings, timeout_s: float) -> redis.Redis:
    """
    Return a connected client once Redis answers and has its dataset loaded.

    Raises RedisUnavailable at once for errors waiting cannot fix, and after `timeout_s`
    for ones it could have but did not.
    """
    where = conn.describe()
    started = time.monotonic()

    def transient(error: BaseException) -> bool:
        if isinstance(error, Fatal):
            return False
        return isinstance(error, redis.exceptions.RedisError)

    def attempt() -> redis.Redis:
        try:
            return _attempt(conn)
        except redis.exceptions.RedisError as e:
            reason = classify(e, conn)
            if reason is not None:
                raise Fatal(reason) from None
            raise

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        wait_s = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "Redis %s not ready (attempt %d, %.1fs elapsed): %s; retrying in %.2fs",
            where, state.attempt_number, time.monotonic() - started, _reason(error, conn), wait_s,
        )

    policy = connect_backoff(timeout_s, transient, before_sleep)
    log.info("Waiting up to %.0fs for Redis at %s", timeout_s, where)
    try:
        client = policy(attempt)
    except Fatal as e:
        log.error("%s", e)
        raise RedisUnavailable(str(e)) from None
    except redis.exceptions.RedisError as e:
        message = f"Redis at {where} not reachable within {timeout_s:g}s: {_reason(e, conn)}"
        log.error(message)
        raise RedisUnavailable(message) from None
    log.info("Redis %s ready after %.2fs", where, time.monotonic() - started)
    return client

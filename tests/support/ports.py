"""
Free loopback ports for the servers the tests start, never handed out twice, whichever test
process asks: pytest-xdist workers and concurrent test sessions on one machine.

``launcher.servers.redis_process.free_port`` asks the kernel for a port (bind to 0) and lets it go,
so two processes can be handed the same one before either server binds it, and a port whose server
a test killed and will restart on it may meanwhile go to another process. Here each port is claimed
with a lock file naming the claiming process, kept until its session ends (a dead process's claims
are taken over), and the ports come from below Linux's ephemeral range: no kernel-chosen port
(another bind to 0, a drill's or bench's own servers in a child process, a client's outgoing
connection) can land on one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import socket
import tempfile
from pathlib import Path


LOOPBACK = "127.0.0.1"
# Below the ephemeral range (Linux's default starts at 32768; checked at claim time) and above the
# well-known and common fixed service ports.
FIRST, LAST = 12000, 32000
LOCK_DIR = Path(tempfile.gettempdir()) / "launcher-test-ports"

_claimed: list[Path] = []
_next: int | None = None


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _lock(port: int) -> bool:
    """Create the port's lock file for this process (under the directory's lock); a dead process's is taken over."""
    path = LOCK_DIR / str(port)
    try:
        owner = int(path.read_text())
    except FileNotFoundError:
        owner = 0
    except (OSError, ValueError):
        return False
    if owner and _alive(owner):
        return False
    path.write_text(str(os.getpid()))
    _claimed.append(path)
    return True


@contextlib.contextmanager
def _directory_locked():
    """Claims and releases are serialised between processes, so a lock file is never checked and taken by two."""
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    with open(LOCK_DIR / ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A loopback port nothing listens on, claimed by this process until `release_ports()`."""
    global _next
    last = min(LAST, _ephemeral_low() - 1)
    if _next is None:
        # A random start per process: concurrent processes seldom even look at the same ports.
        _next = random.randrange(FIRST, last + 1)
    with _directory_locked():
        for _ in range(last - FIRST + 1):
            port, _next = _next, (_next + 1 if _next < last else FIRST)
            if _lock(port):
                if _bindable(port):
                    return port
                _release(_claimed.pop())  # something outside the tests listens there
    raise RuntimeError(f"no free loopback port left in {FIRST}-{last} (locks in {LOCK_DIR})")


def _release(path: Path) -> None:
    with contextlib.suppress(OSError, ValueError):
        if int(path.read_text()) == os.getpid():
            path.unlink()


def release_ports() -> None:
    """Remove this process's lock files (at the end of the session)."""
    with _directory_locked():
        while _claimed:
            _release(_claimed.pop())

"""Who listens on a local TCP port: whether a port is free, and which process holds it.

A managed vLLM must be the process that answers on its port: anything else already listening
there (another vLLM, another gateway's demo) would pass a plain health check and serve our
requests. On Linux the kernel says who listens: ``/proc/net/tcp{,6}`` lists each listening
socket with its inode, and ``/proc/PID/fd`` shows which process holds that inode. Elsewhere the
owner cannot be read, and callers get ``None`` ("unknown") instead of a guess.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from pathlib import Path

_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's `st` column
_PROC = Path("/proc")


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when a server could bind ``host:port`` now (SO_REUSEADDR, as servers set it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def listening_inodes(port: int) -> set[int] | None:
    """Inodes of the sockets listening on ``port`` (any address); None where /proc has no table."""
    found: set[int] = set()
    tables = 0
    for name in ("tcp", "tcp6"):
        try:
            lines = (_PROC / "net" / name).read_text().splitlines()[1:]
        except OSError:
            continue
        tables += 1
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == _LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                found.add(int(fields[9]))
    return found if tables else None


def _holds(pid: int, sockets: set[str]) -> bool:
    try:
        fds = os.listdir(_PROC / str(pid) / "fd")
    except OSError:  # gone, or not ours to read
        return False
    for fd in fds:
        try:
            if os.readlink(_PROC / str(pid) / "fd" / fd) in sockets:
                return True
        except OSError:
            continue
    return False


def _pids() -> Iterable[int]:
    try:
        names = os.listdir(_PROC)
    except OSError:
        return ()
    return (int(n) for n in names if n.isdigit())


def holders(port: int, pids: Iterable[int] | None = None) -> set[int] | None:
    """The processes (among ``pids``, default: all readable) holding a socket listening on
    ``port``; an empty set when nobody listens; None when this system cannot tell."""
    inodes = listening_inodes(port)
    if inodes is None:
        return None
    if not inodes:
        return set()
    sockets = {f"socket:[{i}]" for i in inodes}
    return {pid for pid in (_pids() if pids is None else pids) if _holds(pid, sockets)}


def group_pids(pgid: int) -> list[int]:
    """The live processes of process group ``pgid`` (a managed vLLM and its engine workers)."""
    out = []
    for pid in _pids():
        try:
            if os.getpgid(pid) == pgid:
                out.append(pid)
        except OSError:
            continue
    return out


def describe(pid: int) -> str:
    """``pid 123 (python3 -m http.server 8011)``, or just the pid when its command is unreadable."""
    try:
        cmd = (_PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return f"pid {pid}"
    cmd = cmd.strip()
    return f"pid {pid} ({cmd[:80]}{'...' if len(cmd) > 80 else ''})" if cmd else f"pid {pid}"


def who_holds(port: int) -> str:
    """For a message: which process listens on ``port``, as far as this system can tell."""
    pids = holders(port)
    if not pids:
        return "another process"
    return ", ".join(describe(p) for p in sorted(pids))

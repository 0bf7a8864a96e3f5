"""Where the daemon lives, for the daemon and its clients alike: the
default socket and database, the expansion of a path a user gives, and
whether something listens on a socket."""

from __future__ import annotations

import os
import socket
import stat

DEFAULT_SOCKET = "~/.choo/daemon.sock"
DEFAULT_DB = "~/.choo/daemon.db"

# sun_path holds 108 bytes, the last one a NUL.
MAX_SOCKET_PATH_BYTES = 107


def expand(path: str | os.PathLike[str]) -> str:
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


def socket_path_problem(path: str) -> str | None:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        # gRPC takes the socket's address as UTF-8 text.
        return (f"the socket path {visible(path, quoted=True)} is not valid UTF-8; gRPC cannot "
                "use it (choose another --socket)")
    size = len(os.fsencode(path))
    if size <= MAX_SOCKET_PATH_BYTES:
        return None
    return (f"the socket path {path} is {size} bytes long; Unix socket paths can be at most "
            f"{MAX_SOCKET_PATH_BYTES} bytes (choose a shorter --socket)")


def visible(text: str, *, quoted: bool = False) -> str:
    """text for a terminal: what is not printable (control characters, escape
    sequences, bytes that are not UTF-8) escaped as Python writes it, so that
    it is shown and never obeyed."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else _escaped(c) for c in text)
    return f"'{text}'" if quoted else text


def _escaped(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8, as os.fsdecode keeps it
        return f"\\x{code - 0xDC00:02x}"
    return repr(char)[1:-1]


def probe_socket(path: str) -> str:
    """"absent", "stale" (a socket nobody listens on), "live", "other" (not a
    socket) or an error description."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "absent"
    if not stat.S_ISSOCK(st.st_mode):
        return "other"
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2.0)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        return "stale"
    except FileNotFoundError:
        return "absent"
    except TimeoutError:
        return "live"  # someone listens but its backlog is full
    except OSError as exc:
        return f"cannot check {path}: {exc.strerror or exc}"
    finally:
        probe.close()
    return "live"


def daemon_listening(socket_path: str) -> bool:
    """Whether something accepts connections on the socket right now."""
    return probe_socket(expand(socket_path)) == "live"

"""The daemon's own files: private folders, lock files, the socket path.

Everything the daemon creates is private (folders 0700, files 0600) and
never opened through a symbolic link planted in its place. A start that
fails removes what it created (see Created).
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat


class FileProblem(Exception):
    """A file the daemon cannot use; str() is one line for the user."""

    def __init__(self, message: str, errno_: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno_


class Created:
    """The folders a start created, removed again (if still empty) when it fails."""

    def __init__(self) -> None:
        self.folders: list[str] = []

    def private_dir(self, path: str) -> None:
        """Create path (and its parents) if missing; a folder created here is
        0700. An existing folder is left as it is: it may be shared, like /tmp."""
        if os.path.isdir(path):
            return
        parent = os.path.dirname(path)
        if parent and parent != path:
            self.private_dir(parent)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            return
        self.folders.append(path)
        os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask

    def undo(self) -> None:
        for path in reversed(self.folders):
            try:
                os.rmdir(path)
            except OSError:
                pass  # something else put a file there meanwhile
        self.folders.clear()


def _why(exc: OSError, path: str) -> str:
    if exc.errno == errno.ELOOP:
        return (f"{path} is a symbolic link; the daemon never opens its own files through "
                "one (remove it)")
    return f"{path}: {exc.strerror or exc}"


class LockFile:
    """An flock'ed file holding the owner's pid, 0600, never opened through a
    link; released (and removed) by release()."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> str | None:
        """None once held; otherwise the holder's pid as written (may be "").
        Raises FileProblem when the file cannot be used."""
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                             0o600)
            except OSError as exc:
                raise FileProblem(_why(exc, self.path), exc.errno) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode("ascii", "replace").strip()
                os.close(fd)
                return holder
            except BaseException:
                os.close(fd)
                raise
            # The previous owner may have removed the file between our open and
            # flock: then we locked an orphan and must start over.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            if stat.S_IMODE(os.fstat(fd).st_mode) != 0o600:
                os.fchmod(fd, 0o600)
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self._fd = fd
            return None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.unlink(self.path)  # while still locked, so nobody holds an orphan
        except OSError:
            pass
        os.close(fd)


def remove_socket(path: str) -> str | None:
    """Remove the socket at path if one is there; the problem, if any."""
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        return f"could not remove {path}: {exc.strerror}"
    return None

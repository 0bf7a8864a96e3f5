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


def _another_users(path: str, owner: int, option: str) -> FileProblem:
    return FileProblem(f"{path} belongs to another user (uid {owner}); remove it or choose "
                       f"another {option}", errno.EPERM)


def _owner_of(path: str) -> int | None:
    try:
        return os.lstat(path).st_uid
    except OSError:
        return None


def _as_pid(text: bytes) -> str:
    """The pid a lock file holds; "" for anything else, never quoted to the user."""
    text = text.strip()
    return text.decode() if text.isdigit() and len(text) < 12 else ""


class LockFile:
    """An flock'ed file holding the owner's pid, 0600, never opened through a
    link, refused when another user owns it; released (and removed) by
    release(). option names what a user changes to use another one."""

    def __init__(self, path: str, option: str = "--socket") -> None:
        self.path = path
        self.option = option
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None

    def acquire(self) -> str | None:
        """None once held; otherwise the holder's pid as written (may be "").
        Raises FileProblem when the file cannot be used."""
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                             0o600)
            except OSError as exc:
                owner = _owner_of(self.path)
                if exc.errno in (errno.EACCES, errno.EPERM) and owner not in (None, os.geteuid()):
                    raise _another_users(self.path, owner, self.option) from None
                raise FileProblem(_why(exc, self.path), exc.errno) from None
            owner = os.fstat(fd).st_uid
            if owner != os.geteuid():
                # Someone else made it first (in a shared folder such as /tmp):
                # neither their lock nor their text is ours to use.
                os.close(fd)
                raise _another_users(self.path, owner, self.option)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _as_pid(os.read(fd, 32))
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
            st = os.fstat(fd)
            self._identity = (st.st_dev, st.st_ino)
            return None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        # While still locked, so nobody holds an orphan; and only if the file
        # at the path is still this one (someone may have replaced it).
        _remove_if_same(self.path, self._identity)
        os.close(fd)


def _remove_if_same(path: str, identity: tuple[int, int] | None) -> None:
    try:
        st = os.lstat(path)
        if (st.st_dev, st.st_ino) == identity:
            os.unlink(path)
    except OSError:
        pass


def _flock_holder(st: os.stat_result) -> str:
    """The pid holding an flock on the file (from /proc/locks), or ""."""
    where = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as locks:
            for line in locks:
                fields = line.split()
                if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == where:
                    return fields[4] if fields[4].isdigit() else ""
    except OSError:
        pass
    return ""


class DatabaseLock:
    """One daemon per database: an flock on the database file itself, which
    no deleted or replaced file next to it can undo, and `DB.lock` beside it
    holding the owner's pid for people to read."""

    def __init__(self, db_path: str) -> None:
        self.db_path = db_path
        self.pid_file = LockFile(db_path + ".lock", "--db")
        self._fd: int | None = None
        self._created = False

    def acquire(self) -> str | None:
        """None once held; otherwise the holder's pid ("" when unknown).
        Raises FileProblem when a file cannot be used."""
        holder = self.pid_file.acquire()
        if holder is not None:
            return holder
        try:
            holder = self._lock_database()
        except BaseException:
            self.pid_file.release()
            raise
        if holder is not None:
            self.pid_file.release()
        return holder

    def _lock_database(self) -> str | None:
        existed = os.path.lexists(self.db_path)
        try:
            # O_NONBLOCK: a FIFO planted at the path must not hang the start.
            fd = os.open(self.db_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
                         | os.O_NONBLOCK, 0o600)
        except OSError as exc:
            raise FileProblem(_why(exc, self.db_path), exc.errno) from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise FileProblem(f"{self.db_path} is not a regular file", errno.EINVAL)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return _flock_holder(st)
        self._fd = fd
        self._created = not existed
        return None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            if self._created and os.fstat(fd).st_size == 0:
                # Made by a start that failed before the database was written.
                _remove_if_same(self.db_path, (os.fstat(fd).st_dev, os.fstat(fd).st_ino))
            os.close(fd)
        self.pid_file.release()


# -- what choo's own CLI looks for beside the default socket ------------------------


def write_pid_file(path: str) -> None:
    """path holds this process's pid, as a decimal number and a newline,
    replacing whatever was there (a crashed daemon's stale file); 0600,
    written whole (a reader never sees half of it), never through a link."""
    temporary = f"{path}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW,
                 0o600)
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
    finally:
        os.close(fd)
    os.replace(temporary, path)  # replaces a link itself, never its target


def remove_pid_file(path: str) -> None:
    """Remove path if it still holds this process's pid."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return
    try:
        mine = _as_pid(os.read(fd, 32)) == str(os.getpid())
    finally:
        os.close(fd)
    if mine:
        try:
            os.unlink(path)
        except OSError:
            pass


def open_log(path: str):
    """The daemon's log file, appended to, 0600, never through a link, refused
    when another user owns it."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                 0o600)
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise FileProblem(f"{path} is not this user's file; remove it", errno.EPERM)
    if stat.S_IMODE(st.st_mode) != 0o600:
        os.fchmod(fd, 0o600)
    return os.fdopen(fd, "a", encoding="utf-8", errors="backslashreplace", buffering=1)


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

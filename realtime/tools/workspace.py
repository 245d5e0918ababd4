"""A user's workspace: one directory, and file operations that cannot leave it.

A path from the model is relative, `/`-separated, without `..`; it is walked one component at a time
from an open descriptor of the workspace root with O_NOFOLLOW, so no symlink is ever followed (not even
one inside the workspace: commands in the sandbox may plant them) and no rename racing the walk can
lead out. Absolute paths, `..`, NUL bytes and symlinks are refused, not normalised.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from realtime.errors import ClientError, ConfigError

MAX_PATH_CHARS = 1024
MAX_LIST_ENTRIES = 500
SANDBOX_UID_BASE = 200_000  # per-user uids for sandboxed commands when the server runs as root
SANDBOX_UID_SPAN = 60_000


class ToolError(ClientError):
    """A tool call that cannot be carried out; the message goes back to the model as the tool's result."""

    code = "tool_error"


class PathRefused(ToolError):
    code = "path_refused"


def split_path(path: str) -> list[str]:
    """The components of a workspace-relative path; `.` or `` is the workspace itself (no components)."""
    if not isinstance(path, str) or len(path) > MAX_PATH_CHARS:
        raise PathRefused("The path is not a string of at most 1024 characters.")
    if "\x00" in path or "\\" in path:
        raise PathRefused("The path contains a NUL byte or a backslash.")
    if path.startswith("/") or path.startswith("~"):
        raise PathRefused("Absolute paths are refused: give a path relative to the workspace.")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise PathRefused("Paths with '..' are refused.")
    return parts


@dataclass(frozen=True, slots=True)
class Entry:
    name: str
    kind: str  # file, dir, symlink, other
    size: int


class Workspace:
    """File operations inside `root`. Blocking (small files): call them from a thread for big ones."""

    def __init__(self, root: Path, *, max_file_size: int = 1 << 20) -> None:
        self.root = root
        self.max_file_size = max_file_size

    # ---- walking ---------------------------------------------------------------------------------

    def _open_root(self) -> int:
        return os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def _owner(self, root_fd: int) -> tuple[int, int] | None:
        """Files the server creates belong to the workspace's owner (the sandbox's uid) when we are root."""
        if os.geteuid() != 0:
            return None
        st = os.fstat(root_fd)
        return st.st_uid, st.st_gid

    def _walk(self, parts: list[str], *, create: bool = False) -> int:
        """An O_NOFOLLOW descriptor of the directory holding parts[-1] (or of parts itself when a dir)."""
        fd = self._open_root()
        owner = self._owner(fd) if create else None
        try:
            for part in parts:
                try:
                    nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise ToolError(f"No such directory: {part}") from None
                    os.mkdir(part, 0o755, dir_fd=fd)
                    nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                    if owner is not None:
                        os.fchown(nfd, *owner)
                except OSError as exc:
                    if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                        raise PathRefused(f"'{part}' is not a directory (symlinks are not followed).") from None
                    raise ToolError(f"Cannot open '{part}': {exc.strerror}.") from None
                os.close(fd)
                fd = nfd
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _parent(self, path: str, *, create: bool = False) -> tuple[int, str]:
        parts = split_path(path)
        if not parts:
            raise PathRefused("The path names the workspace itself, not a file.")
        return self._walk(parts[:-1], create=create), parts[-1]

    # ---- operations ------------------------------------------------------------------------------

    def list(self, path: str = ".") -> list[Entry]:
        fd = self._walk(split_path(path))
        try:
            out: list[Entry] = []
            for name in sorted(os.listdir(fd))[:MAX_LIST_ENTRIES]:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                kind = (
                    "dir"
                    if stat.S_ISDIR(st.st_mode)
                    else "file"
                    if stat.S_ISREG(st.st_mode)
                    else "symlink"
                    if stat.S_ISLNK(st.st_mode)
                    else "other"
                )
                out.append(Entry(name, kind, st.st_size if kind == "file" else 0))
            return out
        finally:
            os.close(fd)

    def read(self, path: str) -> tuple[str, bool]:
        """(text, truncated): at most max_file_size bytes, invalid UTF-8 replaced."""
        dfd, name = self._parent(path)
        try:
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dfd)
            except FileNotFoundError:
                raise ToolError(f"No such file: {path}") from None
            except OSError as exc:
                if exc.errno == errno.ELOOP:  # a symlink
                    raise PathRefused(f"'{path}' is a symlink; symlinks are not followed.") from None
                raise ToolError(f"Cannot read '{path}': {exc.strerror}.") from None
        finally:
            os.close(dfd)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ToolError(f"'{path}' is not a regular file.")
            data = b""
            while len(data) <= self.max_file_size and (chunk := os.read(fd, 65536)):
                data += chunk
        finally:
            os.close(fd)
        truncated = len(data) > self.max_file_size
        return data[: self.max_file_size].decode("utf-8", "replace"), truncated

    def write(self, path: str, content: str) -> int:
        data = content.encode()
        if len(data) > self.max_file_size:
            raise ToolError(f"The content is over the {self.max_file_size}-byte file limit.")
        dfd, name = self._parent(path, create=True)
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
            try:
                fd = os.open(name, flags, 0o644, dir_fd=dfd)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise PathRefused(f"'{path}' is a symlink; symlinks are not followed.") from None
                if exc.errno == errno.EISDIR:
                    raise ToolError(f"'{path}' is a directory.") from None
                raise ToolError(f"Cannot write '{path}': {exc.strerror}.") from None
            owner = self._owner(dfd)
        finally:
            os.close(dfd)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ToolError(f"'{path}' is not a regular file.")
            if st.st_nlink > 1:
                raise PathRefused(f"'{path}' has other hard links; it is not overwritten.")
            os.ftruncate(fd, 0)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if owner is not None:
                os.fchown(fd, *owner)
        finally:
            os.close(fd)
        return len(data)

    def delete(self, path: str) -> str:
        """Remove a file, a symlink (not its target) or a directory tree; returns what it removed."""
        dfd, name = self._parent(path)
        try:
            try:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:
                raise ToolError(f"No such file or directory: {path}") from None
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(name, dir_fd=dfd)  # symlink-safe: fd-based, never follows links
                return "directory"
            os.unlink(name, dir_fd=dfd)
            return "file"
        finally:
            os.close(dfd)


class Workspaces:
    """One directory per user under `base`, named by a hash of the user (no user id reaches a path)."""

    def __init__(self, base: Path, *, max_file_size: int = 1 << 20) -> None:
        self.base = base
        self.max_file_size = max_file_size

    @staticmethod
    def key(user: str) -> str:
        return hashlib.sha256(user.encode()).hexdigest()[:32]

    @staticmethod
    def sandbox_uid(user: str) -> int:
        """The uid a root server runs this user's commands as (distinct per user, never 0)."""
        return SANDBOX_UID_BASE + int(Workspaces.key(user)[:8], 16) % SANDBOX_UID_SPAN

    def for_user(self, user: str) -> Workspace:
        self.base.mkdir(mode=0o711, parents=True, exist_ok=True)
        if os.geteuid() == 0:
            for directory in (self.base, *self.base.parents):
                if not os.stat(directory).st_mode & stat.S_IXOTH:
                    raise ConfigError(
                        f"REALTIME_TOOLS_DIR: {directory} is not searchable by others (o+x); sandboxed commands "
                        "run as unprivileged uids and must reach their workspace."
                    )
        root = self.base / self.key(user)
        try:
            root.mkdir(mode=0o700)
            if os.geteuid() == 0:
                uid = self.sandbox_uid(user)
                os.chown(root, uid, uid)
        except FileExistsError:
            pass
        if root.is_symlink() or not root.is_dir():
            raise PathRefused("The workspace is not a directory.")
        return Workspace(root, max_file_size=self.max_file_size)

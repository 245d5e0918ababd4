"""Workspace paths: relative paths work; `..`, absolute paths and symlinks never lead out."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from realtime.tools.workspace import PathRefused, ToolError, Workspaces, split_path


@pytest.mark.parametrize(
    "path",
    ["/etc/passwd", "../x", "a/../../x", "a/..", "..", "~/x", "a\\..\\b", "a\x00b", "x" * 2000],
)
def test_split_path_refuses_escapes(path: str) -> None:
    """Absolute paths, `..`, `~`, backslashes, NUL bytes and huge paths are refused, not normalised."""
    with pytest.raises(PathRefused):
        split_path(path)


def test_split_path_accepts_relative() -> None:
    """Plain relative paths split into components; `.` and empty components drop out."""
    assert split_path("./a//b/c.py") == ["a", "b", "c.py"]
    assert split_path(".") == []


def test_write_read_list_delete(workspaces: Workspaces) -> None:
    """Files round-trip; parent directories are created; delete removes files and trees."""
    ws = workspaces.for_user("alice")
    assert ws.write("src/primes.py", "print(2)\n") == 9
    assert ws.read("src/primes.py") == ("print(2)\n", False)
    assert [(e.name, e.kind) for e in ws.list(".")] == [("src", "dir")]
    assert [(e.name, e.kind, e.size) for e in ws.list("src")] == [("primes.py", "file", 9)]
    assert ws.delete("src/primes.py") == "file"
    ws.write("d/e/f.txt", "x")
    assert ws.delete("d") == "directory"
    assert [e.name for e in ws.list()] == ["src"]


def test_users_have_separate_workspaces(workspaces: Workspaces) -> None:
    """Two users get two directories, named by a hash (no user id text reaches the filesystem)."""
    a, b = workspaces.for_user("alice"), workspaces.for_user("../bob")
    assert a.root != b.root and a.root.parent == b.root.parent == workspaces.base
    a.write("secret.txt", "alice only")
    with pytest.raises(ToolError):
        b.read("secret.txt")


def test_symlink_out_is_refused(workspaces: Workspaces, tmp_path: Path) -> None:
    """A symlink planted in the workspace (to a file or a directory outside) is never followed."""
    ws = workspaces.for_user("alice")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("host secret")
    os.symlink(outside / "secret", ws.root / "link")
    os.symlink(outside, ws.root / "dirlink")
    with pytest.raises(PathRefused):
        ws.read("link")
    with pytest.raises(PathRefused):
        ws.write("link", "overwrite")
    with pytest.raises(PathRefused):
        ws.read("dirlink/secret")
    with pytest.raises(PathRefused):
        ws.write("dirlink/new", "x")
    with pytest.raises(PathRefused):
        ws.list("dirlink")
    assert ws.delete("dirlink") == "file"  # the link goes, its target stays
    assert (outside / "secret").read_text() == "host secret"
    assert not (outside / "new").exists()


def test_hard_link_is_not_overwritten(workspaces: Workspaces, tmp_path: Path) -> None:
    """A file with other hard links (possibly outside) is not written through."""
    ws = workspaces.for_user("alice")
    ws.write("a.txt", "one")
    os.link(ws.root / "a.txt", tmp_path / "other")
    with pytest.raises(PathRefused):
        ws.write("a.txt", "two")
    assert (tmp_path / "other").read_text() == "one"


def test_sizes_are_bounded(workspaces: Workspaces) -> None:
    """Writes over the file limit are refused; reads stop at it and say so."""
    ws = workspaces.for_user("alice")
    with pytest.raises(ToolError):
        ws.write("big", "x" * (ws.max_file_size + 1))
    with open(ws.root / "big", "wb") as f:
        f.write(b"y" * (ws.max_file_size + 10))
    text, truncated = ws.read("big")
    assert truncated and len(text) == ws.max_file_size


def test_fifo_and_devices_are_not_read(workspaces: Workspaces) -> None:
    """A FIFO planted in the workspace is not read (no hang): only regular files are."""
    ws = workspaces.for_user("alice")
    os.mkfifo(ws.root / "pipe")
    with pytest.raises(ToolError):
        ws.read("pipe")
    with pytest.raises(ToolError):
        ws.write("pipe", "x")

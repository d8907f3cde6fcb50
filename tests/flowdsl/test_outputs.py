"""flowdsl.outputs: user-named outputs are written atomically, and only over regular files or new names."""

from __future__ import annotations

import os
import stat

import pytest

from flowdsl.errors import FlowDSLError
from flowdsl.outputs import (
    OutputError,
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    check_output_format,
    check_output_path,
)


def test_new_name_and_regular_file_are_written(tmp_path):
    p = tmp_path / "a.bin"
    assert atomic_write_bytes(p, b"one") == p
    assert p.read_bytes() == b"one"
    atomic_write_text(p, "two")
    assert p.read_text() == "two"
    assert sorted(os.listdir(tmp_path)) == ["a.bin"]  # no temp file left


def test_symlink_to_a_regular_file_replaces_the_target_and_keeps_the_link(tmp_path):
    target = tmp_path / "real.txt"
    target.write_text("old")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    atomic_write_text(link, "new")
    assert link.is_symlink() and target.read_text() == "new"


def _private_device(tmp_path, name: str, major: int = 1, minor: int = 3):
    """A character device node of our own (a copy of /dev/null's numbers) in tmp_path: a test that
    fails can only damage this node, never the system's /dev/null."""
    p = tmp_path / name
    try:
        os.mknod(p, stat.S_IFCHR | 0o666, os.makedev(major, minor))
    except (PermissionError, AttributeError, OSError):
        pytest.skip("cannot make a device node here (needs root)")
    return p


@pytest.mark.parametrize("minor", [3, 7, 5])  # null, full, zero
def test_devices_are_refused_and_left_alone(tmp_path, minor):
    dev = _private_device(tmp_path, "dev", 1, minor)
    before = os.lstat(dev)
    with pytest.raises(OutputError, match="refusing to write the output: it is a character device") as e:
        atomic_write_bytes(dev, b"\x89PNG")
    assert isinstance(e.value, FlowDSLError) and e.value.filename == str(dev)
    after = os.lstat(dev)
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev and after.st_ino == before.st_ino
    assert sorted(os.listdir(tmp_path)) == ["dev"]


def test_fifo_folder_socket_and_symlinks_to_them_are_refused(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    folder = tmp_path / "dir"
    folder.mkdir()
    for path, what in [(fifo, "a FIFO"), (folder, "a folder")]:
        with pytest.raises(OutputError, match=f"it is {what}"):
            atomic_write_bytes(path, b"x")
        link = tmp_path / f"link-{path.name}"
        link.symlink_to(path)
        with pytest.raises(OutputError, match=f"it is a symlink to {what}"):
            atomic_write_bytes(link, b"x")
    dev_link = tmp_path / "null-link"
    dev_link.symlink_to(_private_device(tmp_path, "null"))
    with pytest.raises(OutputError, match="symlink to a character device"):
        atomic_write_bytes(dev_link, b"x")
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "missing")
    with pytest.raises(OutputError, match="symlink to a missing"):
        atomic_write_bytes(dangling, b"x")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and folder.is_dir() and not os.listdir(folder)
    assert os.path.islink(dev_link) and os.path.islink(dangling)


def test_parent_folders_are_made_only_when_asked(tmp_path):
    p = tmp_path / "x" / "y" / "out.txt"
    with pytest.raises(OutputError, match="does not exist"):
        atomic_write_text(p, "hi")
    assert not (tmp_path / "x").exists()
    atomic_write_text(p, "hi", make_parents=True)
    assert p.read_text() == "hi"
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(OutputError, match="Not a directory|is not a folder"):
        check_output_path(f / "out.txt")


def test_a_failing_writer_leaves_the_old_file_and_no_temp_file(tmp_path):
    p = tmp_path / "keep.txt"
    p.write_text("old")

    def boom(f):
        f.write(b"half")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_write(p, boom)
    assert p.read_text() == "old" and sorted(os.listdir(tmp_path)) == ["keep.txt"]


def test_unwritable_folder_is_an_output_error(tmp_path, monkeypatch):
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    if os.geteuid() == 0:  # root writes into read-only folders: the OS refusal is simulated
        import flowdsl.outputs as outputs

        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(outputs.tempfile, "mkstemp", refuse)
    try:
        with pytest.raises(OutputError, match="Permission denied"):
            atomic_write_text(d / "x.txt", "x")
    finally:
        d.chmod(0o700)


def test_formats_by_suffix():
    assert check_output_format("a/B.NPY", [".npy", ".png"]) == ".npy"
    with pytest.raises(OutputError, match=r"unknown format \('.txt'\); use one of .npy, .png"):
        check_output_format("s.txt", [".npy", ".png"])
    with pytest.raises(OutputError, match="no suffix"):
        check_output_format("samples", [".npy"])


def test_checkpoint_atomic_write_delegates(tmp_path):
    from flowdsl.runtime.training.checkpoint import atomic_write as ckpt_write

    ckpt_write(tmp_path / "run" / "last.pt", lambda f: f.write(b"ok"))  # the run folder is made
    assert (tmp_path / "run" / "last.pt").read_bytes() == b"ok"
    dev = _private_device(tmp_path, "null")
    with pytest.raises(OutputError, match="character device"):
        ckpt_write(dev, lambda f: f.write(b"x"))
    assert stat.S_ISCHR(os.lstat(dev).st_mode)
    with pytest.raises(OutputError, match="a folder"):
        ckpt_write(tmp_path / "run", lambda f: f.write(b"x"))


def test_permissions_follow_the_umask_or_the_replaced_file(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "new.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "new.txt").st_mode) == 0o640  # not mkstemp's 0o600
    f = tmp_path / "kept.txt"
    f.write_text("old")
    f.chmod(0o604)
    atomic_write_text(f, "new")
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o604 and f.read_text() == "new"

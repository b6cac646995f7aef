"""bsmamba.files: atomic writes leave the old file or the new one, with the umask's mode."""

import os
import stat
import subprocess
import sys

import pytest

from bsmamba import files


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077, 0o002], ids=oct)
def test_written_files_get_the_mode_the_umask_gives(tmp_path, umask):
    # In a child process: the umask is process-wide and the tests may run threads.
    code = (
        "import os, sys; from bsmamba import files; os.umask(int(sys.argv[2], 8)); d = sys.argv[1];"
        "files.write_text(d + '/a.txt', 'x'); files.write_json(d + '/b.json', {})"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path), oct(umask)], check=True)
    touched = tmp_path / "c.txt"
    subprocess.run(["sh", "-c", f"umask {umask:03o} && touch {touched}"], check=True)
    assert _mode(touched) == 0o666 & ~umask  # what any other tool does
    for name in ("a.txt", "b.json"):
        assert _mode(tmp_path / name) == 0o666 & ~umask, name


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = files.write_text(tmp_path / "r.json", "old")

    def boom(f):
        f.write("half of the new")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        files.atomic_write(path, boom, mode="w")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_read_json_treats_a_damaged_record_as_missing(tmp_path):
    (tmp_path / "bad.json").write_text('{"status": "do')
    assert files.read_json(tmp_path / "bad.json") is None
    assert files.read_json(tmp_path / "missing.json") is None
    files.write_json(tmp_path / "ok.json", {"a": 1})
    assert files.read_json(tmp_path / "ok.json") == {"a": 1}


def test_a_full_disk_under_torch_save_is_the_oserror_naming_the_file(tmp_path):
    import torch

    disk = tmp_path / "disk"
    disk.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)]
    if subprocess.run(mount, capture_output=True).returncode:
        pytest.skip("mounting a small tmpfs is not permitted here")
    try:
        with pytest.raises(OSError) as e:  # torch alone says "unexpected pos 704 vs 598"
            files.atomic_write(disk / "x.ckpt", lambda f: torch.save(torch.zeros(100_000), f))
        assert e.value.errno == 28 and e.value.filename == str(disk / "x.ckpt")
        assert files.error_line(e.value).endswith("x.ckpt: the disk is full: free space or "
                                                 "choose another output")  # fmt: skip
        assert list(disk.iterdir()) == []  # the temp file is gone
    finally:
        subprocess.run(["umount", "-l", str(disk)])

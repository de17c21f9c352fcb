import os
import stat

import pytest

from stylecore.io import atomic_write_bytes, atomic_write_text


def test_atomic_write_replaces_whole_files_with_normal_permissions(tmp_path):
    target = tmp_path / "sub" / "report.json"
    atomic_write_text(target, "first")
    atomic_write_text(target, "second")
    assert target.read_text() == "second"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in target.parent.iterdir()] == ["report.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "report.json"
    atomic_write_text(target, "old")
    with pytest.raises(TypeError):
        atomic_write_bytes(target, object())  # type: ignore[arg-type]  (the write into the temporary fails)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


@pytest.mark.parametrize("name", ["../x", "a/../../x", "/etc/passwd", "C:/x", "a\\b", "a\x00b", "a\nb", "", "a//b", "./a",
                                  "x" * 256])
def test_names_from_data_that_would_leave_their_folder_are_refused(tmp_path, name):
    from stylecore.io import UnsafeName, confined_path

    with pytest.raises(UnsafeName):
        confined_path(tmp_path, name)


def test_a_symbolic_link_inside_the_folder_cannot_lead_a_name_out_of_it(tmp_path):
    from stylecore.io import UnsafeName, confined_path

    (tmp_path / "out").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "out" / "link").symlink_to(tmp_path / "elsewhere")
    assert confined_path(tmp_path / "out", "nested/photo-1.jpg") == tmp_path / "out" / "nested" / "photo-1.jpg"
    with pytest.raises(UnsafeName, match="symbolic link"):
        confined_path(tmp_path / "out", "link/photo.jpg")


def test_only_the_temporaries_of_atomic_writes_are_removed(tmp_path):
    from stylecore.io import _TEMPORARY, atomic_directory, remove_stale_temporaries

    keep = [tmp_path / "step-000002", tmp_path / ".hidden", tmp_path / "a.tmp", tmp_path / f".x.{'g' * 32}.tmp"]
    for path in keep:
        path.mkdir()
    stale = [tmp_path / f".step-000003.{'a' * 32}.tmp", tmp_path / f".step-000001.{'0f' * 16}.old"]
    stale[0].mkdir()
    stale[1].write_bytes(b"half")
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted(stale)
    assert all(path.exists() for path in keep) and not any(path.exists() for path in stale)
    with atomic_directory(tmp_path / "fresh") as building:  # the names atomic_directory gives are what is cleaned
        assert [p.name for p in tmp_path.iterdir() if _TEMPORARY.match(p.name)] == [building.name]

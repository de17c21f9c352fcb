import hashlib
import io
import tarfile
import zipfile

import pytest

from pipelines.fetch import ChecksumMismatch, DownloadError, UnsafeArchive, download, extract

from loopback_http import LoopbackServer


@pytest.fixture
def served(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    payload = bytes(range(256)) * 4096 * 3  # 3 MiB: several read chunks
    (root / "archive.bin").write_bytes(payload)
    with LoopbackServer(root) as server:
        yield server, payload


def test_download_verifies_and_places_the_file(served, tmp_path):
    server, payload = served
    dest = tmp_path / "out" / "archive.bin"
    result = download(server.url("archive.bin"), dest, md5=hashlib.md5(payload).hexdigest(), progress=False)
    assert dest.read_bytes() == payload and result["status"] == "downloaded"
    assert result["sha256"] == hashlib.sha256(payload).hexdigest()
    again = download(server.url("archive.bin"), dest, md5=hashlib.md5(payload).hexdigest(), progress=False)
    assert again["status"] == "present" and again["bytes_fetched"] == 0


def test_a_connection_dropped_mid_file_resumes_with_a_range_request(served, tmp_path):
    server, payload = served
    server.drop_once("archive.bin", after_bytes=1_000_000)
    dest = tmp_path / "archive.bin"
    result = download(server.url("archive.bin"), dest, sha256=hashlib.sha256(payload).hexdigest(),
                      backoff=0.01, progress=False)
    assert dest.read_bytes() == payload
    ranges = [r for _, r in server.requests]
    assert ranges[0] is None and ranges[1] is not None and ranges[1].startswith("bytes=")
    resumed_from = int(ranges[1].split("=")[1].rstrip("-"))
    assert 0 < resumed_from <= 1_000_000
    assert result["bytes_fetched"] == len(payload)  # nothing fetched twice


def test_a_wrong_checksum_fails_clearly_and_keeps_nothing(served, tmp_path):
    server, _ = served
    dest = tmp_path / "out" / "archive.bin"
    with pytest.raises(ChecksumMismatch, match="published value is 0{32}"):
        download(server.url("archive.bin"), dest, md5="0" * 32, progress=False)
    assert list((tmp_path / "out").iterdir()) == []


def test_a_chunked_response_cut_mid_way_is_retried_and_resumed(served, tmp_path):
    server, payload = served
    server.frame("archive.bin", "chunked")
    server.drop_once("archive.bin", after_bytes=2_500_000)  # http.client raises IncompleteRead, not OSError
    dest = tmp_path / "archive.bin"
    result = download(server.url("archive.bin"), dest, backoff=0.01, progress=False)
    assert dest.read_bytes() == payload and result["status"] == "downloaded"
    assert [r is not None for _, r in server.requests][:2] == [False, True]  # the retry resumed with a Range


def test_a_dropped_connection_with_no_length_and_no_checksum_is_not_taken_as_complete(served, tmp_path):
    """The WikiArt case: no publisher checksum, no size in the catalogue, no Content-Length. Before, the truncated
    file was accepted and its hash recorded as the file's from then on."""
    server, payload = served
    server.frame("archive.bin", "close")
    server.drop_once("archive.bin", after_bytes=700_000)
    dest = tmp_path / "archive.bin"
    result = download(server.url("archive.bin"), dest, backoff=0.01, progress=False)
    assert dest.read_bytes() == payload
    assert result["sha256"] == hashlib.sha256(payload).hexdigest()


def test_a_close_delimited_download_is_confirmed_complete_by_the_server(served, tmp_path):
    server, payload = served
    server.frame("archive.bin", "close")
    download(server.url("archive.bin"), tmp_path / "archive.bin", progress=False)
    # the body, then a Range probe for what follows it, answered 416: nothing more
    assert [r for _, r in server.requests] == [None, f"bytes={len(payload)}-"]


def test_a_present_file_that_fails_its_check_is_replaced_not_kept_forever(served, tmp_path):
    server, payload = served
    dest = tmp_path / "archive.bin"
    dest.write_bytes(payload[:1000])  # an earlier, corrupted copy
    result = download(server.url("archive.bin"), dest, md5=hashlib.md5(payload).hexdigest(), progress=False)
    assert result["status"] == "downloaded" and dest.read_bytes() == payload


def test_a_missing_file_is_not_retried_forever(served, tmp_path):
    server, _ = served
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(server.url("nope.tar"), tmp_path / "nope.tar", progress=False)


def test_a_server_without_range_support_restarts_cleanly(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    payload = b"x" * 3_000_000
    (root / "f.bin").write_bytes(payload)
    with LoopbackServer(root, ranges=False) as server:
        server.drop_once("f.bin", after_bytes=500_000)
        download(server.url("f.bin"), tmp_path / "f.bin", backoff=0.01, progress=False)
    assert (tmp_path / "f.bin").read_bytes() == payload


def _tar_with(tmp_path, add):
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as tar:
        add(tar)
    return path


def _file(tar, name, data=b"data"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("make, message", [
    (lambda tar: _file(tar, "../escape.txt"), "climbs out"),
    (lambda tar: _file(tar, "/etc/evil.txt"), "absolute path"),
    (lambda tar: tar.addfile(tarfile.TarInfo("link") if False else _symlink("link", "../../outside")), "link"),
    (lambda tar: tar.addfile(_fifo("pipe")), "special file"),
])
def test_unsafe_tar_archives_are_refused_before_writing_anything(tmp_path, make, message):
    archive = _tar_with(tmp_path, lambda tar: (_file(tar, "good.txt"), make(tar)))
    with pytest.raises(UnsafeArchive, match=message):
        extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))
    assert not (tmp_path / "escape.txt").exists()


def _symlink(name, target):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


def _fifo(name):
    info = tarfile.TarInfo(name)
    info.type = tarfile.FIFOTYPE
    return info


def test_unsafe_zip_archives_are_refused(tmp_path):
    for name, message in (("../up.txt", "climbs out"), ("/abs.txt", "absolute path")):
        path = tmp_path / "evil.zip"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("ok.txt", "fine")
            zf.writestr(zipfile.ZipInfo(name), "bad")
        with pytest.raises(UnsafeArchive, match=message):
            extract(path, tmp_path / "out")
        assert not (tmp_path / "out").exists()
    link = zipfile.ZipInfo("link")
    link.external_attr = (0o120777 << 16)
    with zipfile.ZipFile(tmp_path / "link.zip", "w") as zf:
        zf.writestr(link, "../../etc/passwd")
    with pytest.raises(UnsafeArchive, match="symbolic link"):
        extract(tmp_path / "link.zip", tmp_path / "out")


def test_good_archives_extract_into_place(tmp_path):
    archive = _tar_with(tmp_path, lambda tar: (_file(tar, "a/b.txt", b"hello"), _file(tar, "c.txt")))
    names = extract(archive, tmp_path / "out")
    assert sorted(names) == ["a/b.txt", "c.txt"] and (tmp_path / "out" / "a" / "b.txt").read_bytes() == b"hello"
    second = _tar_with(tmp_path, lambda tar: _file(tar, "d.txt"))
    extract(second, tmp_path / "out")  # a second archive joins the first
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a", "c.txt", "d.txt"]


def test_zip_names_written_as_utf8_without_the_flag_keep_their_accents(tmp_path):
    path = tmp_path / "names.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("Impressionism/claude-monet_étretat.jpg", b"a")  # Python sets the UTF-8 flag
    raw = bytearray(path.read_bytes())  # clear the flag (bit 11) in the local and central headers, as many tools write
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = raw.find(signature)
        flags = int.from_bytes(raw[at + offset:at + offset + 2], "little") & ~0x800
        raw[at + offset:at + offset + 2] = flags.to_bytes(2, "little")
    path.write_bytes(bytes(raw))
    with zipfile.ZipFile(path) as zf:
        assert zf.infolist()[0].filename != "Impressionism/claude-monet_étretat.jpg"  # what Python reads: CP437
    assert extract(path, tmp_path / "out") == ["Impressionism/claude-monet_étretat.jpg"]
    assert (tmp_path / "out" / "Impressionism" / "claude-monet_étretat.jpg").read_bytes() == b"a"

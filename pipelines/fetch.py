"""HTTP downloads that resume, retry and verify; archive extraction that refuses to escape its folder.

Nothing reaches its final path before it is verified: a download grows in ``<name>.part`` (resumed with
an HTTP Range request after a dropped connection or a killed run), is checked against its MD5 or
SHA-256, and only then renamed. A checksum mismatch deletes the partial file and raises
:class:`ChecksumMismatch` naming both digests. Extraction goes to a temporary folder that is renamed
into place once every member passed the checks.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import stat
import tarfile
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from pathlib import Path, PurePosixPath

log = logging.getLogger(__name__)

CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download failed after every retry; the message names the URL and the last error."""


class ChecksumMismatch(DownloadError):
    """The downloaded bytes are not the published file."""


class UnsafeArchive(ValueError):
    """An archive member would land outside the extraction folder, or is a link or special file."""


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _content_length(response) -> int | None:
    value = response.headers.get("Content-Length")
    return int(value) if value is not None and value.isdigit() else None


def check_disk_space(folder: Path, needed: int, what: str) -> None:
    free = shutil.disk_usage(folder).free
    # Keep 1 GiB spare: a full disk breaks everything else on the machine too.
    if needed + (1 << 30) > free:
        raise DownloadError(f"{what}: needs {needed / 1e9:.2f} GB more, only {free / 1e9:.2f} GB free in {folder} "
                            "(keeping 1 GB spare); free space or move data/ to a bigger disk")


def download(url: str, dest: Path, md5: str | None = None, sha256: str | None = None, size: int | None = None,
             retries: int = 5, backoff: float = 1.0, timeout: float = 60.0, progress: bool = True) -> dict:
    """Fetch ``url`` to ``dest`` (resuming ``dest.part``), verify it, and return what was done.

    The result says whether the file was ``downloaded`` or already ``present`` (verified), the bytes
    fetched, and the digests (``sha256`` is always computed, so a source without a published checksum
    can pin it after the first download).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_file():
        try:
            digests = verify(dest, md5, sha256, url)
            return {"url": url, "path": str(dest), "status": "present", "bytes_fetched": 0, **digests}
        except ChecksumMismatch as error:
            # A present file that fails its check is never used, and kept it would fail every rerun the same way.
            log.warning("%s: the file already here fails its check (%s); deleting it and downloading again", dest, error)
            dest.unlink()
    part = dest.with_name(dest.name + ".part")
    fetched = 0
    attempt = 0
    while True:
        have = part.stat().st_size if part.exists() else 0
        request = urllib.request.Request(url, headers={"User-Agent": "stylecore-download/1"})
        if have:
            request.add_header("Range", f"bytes={have}-")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status = getattr(response, "status", 200)
                if have and status != 206:  # the server ignored the Range: start over
                    log.warning("%s: server does not resume (HTTP %s); restarting from byte 0", url, status)
                    have = 0
                length = _content_length(response)
                total = (have + length) if length is not None else size
                if length is not None:
                    check_disk_space(dest.parent, length, url)
                bar = None
                if progress:
                    from tqdm import tqdm

                    bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=dest.name, leave=False,
                               disable=None)
                with open(part, "ab" if have else "wb") as handle:
                    while block := response.read(CHUNK):
                        handle.write(block)
                        fetched += len(block)
                        if bar is not None:
                            bar.update(len(block))
                    handle.flush()
                    os.fsync(handle.fileno())
                if bar is not None:
                    bar.close()
                if total is not None and part.stat().st_size < total:
                    raise ConnectionError(f"connection closed at byte {part.stat().st_size} of {total}")
            if total is None and not _confirmed_complete(url, part.stat().st_size, timeout):
                # No length from the server or the catalogue: a connection dropped mid-way looks like a clean end.
                raise ConnectionError(f"no length was sent and the server does not confirm that "
                                      f"{part.stat().st_size} bytes is the whole file")
            break
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, http.client.HTTPException) as error:
            if isinstance(error, urllib.error.HTTPError) and error.code in (403, 404, 410):
                raise DownloadError(f"{url}: HTTP {error.code} {error.reason}; the file is not available at this "
                                    "address (check the URL in params.yaml)") from None
            if isinstance(error, urllib.error.HTTPError) and error.code == 416:
                break  # Range past the end: the partial file is already complete
            attempt += 1
            if attempt > retries:
                raise DownloadError(f"{url}: failed after {retries} retries ({type(error).__name__}: {error}); "
                                    f"{part.name} keeps {part.stat().st_size if part.exists() else 0} bytes, "
                                    "rerun to resume") from None
            wait = backoff * 2 ** (attempt - 1)
            log.warning("%s: %s; retry %d/%d in %.1fs (resuming)", url, error, attempt, retries, wait)
            time.sleep(wait)
    try:
        digests = verify(part, md5, sha256, url)
    except ChecksumMismatch:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    return {"url": url, "path": str(dest), "status": "downloaded", "bytes_fetched": fetched, **digests}


def _confirmed_complete(url: str, have: int, timeout: float) -> bool:
    """Whether the server says a file of ``have`` bytes is whole: a Range request for what follows is answered
    416 (nothing there), or an empty 206, or the full file's Content-Length equals ``have``."""
    request = urllib.request.Request(url, headers={"User-Agent": "stylecore-download/1", "Range": f"bytes={have}-"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = getattr(response, "status", 200)
            length = _content_length(response)
            if status == 206:
                return length == 0 or not response.read(1)
            return length == have  # the server ignored the Range: believe only a declared length
    except urllib.error.HTTPError as error:
        return error.code == 416
    except (urllib.error.URLError, OSError, http.client.HTTPException):
        return False


def verify(path: Path, md5: str | None, sha256: str | None, what: str) -> dict:
    """Check ``path`` against the published digests; returns the digests computed."""
    digests = {"sha256": file_digest(path, "sha256")}
    if md5:
        digests["md5"] = file_digest(path, "md5")
    for name, expected in (("md5", md5), ("sha256", sha256)):
        if expected and digests[name] != expected.lower():
            raise ChecksumMismatch(f"{what}: {name} of the downloaded file is {digests[name]}, the published value is "
                                   f"{expected}; the file is corrupt or was changed upstream. Nothing was kept; "
                                   "rerun to download again, or update the checksum in params.yaml if the publisher "
                                   "changed the file")
    return digests


def _check_member_name(name: str, archive: Path) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchive(f"{archive}: member {name!r} has an absolute path; refusing to extract")
    if ".." in path.parts:
        raise UnsafeArchive(f"{archive}: member {name!r} climbs out of the folder ('..'); refusing to extract")
    return path


def extract(archive: Path, dest: Path) -> list[str]:
    """Extract a .tar(.gz) or .zip into ``dest``; returns the member names.

    Refuses absolute paths, ``..``, symbolic and hard links, devices and FIFOs before writing anything.
    Members land in a temporary folder first; then each top-level entry is moved into ``dest``
    (replacing an entry of the same name), so several archives can share one ``dest`` and a killed
    extraction leaves no half-written tree behind.
    """
    archive, dest = Path(archive), Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex}.tmp"
    tmp.mkdir()
    try:
        if zipfile.is_zipfile(archive):
            names = _extract_zip(archive, tmp)
        elif tarfile.is_tarfile(archive):
            names = _extract_tar(archive, tmp)
        else:
            raise UnsafeArchive(f"{archive}: neither a tar nor a zip archive")
        dest.mkdir(exist_ok=True)
        for entry in sorted(tmp.iterdir()):
            target = dest / entry.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            os.replace(entry, target)
        return names
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _extract_tar(archive: Path, dest: Path) -> list[str]:
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        for member in members:
            _check_member_name(member.name, archive)
            if member.issym() or member.islnk():
                raise UnsafeArchive(f"{archive}: member {member.name!r} is a link; refusing to extract")
            if not (member.isfile() or member.isdir()):
                raise UnsafeArchive(f"{archive}: member {member.name!r} is a device, FIFO or other special file")
        # The stdlib's "data" filter repeats these checks and strips permissions that do not belong.
        tar.extractall(dest, members=members, filter="data")
    return [m.name for m in members if m.isfile()]


def _zip_member_name(info: zipfile.ZipInfo) -> str:
    """The member's name as its author wrote it. Without the UTF-8 flag (bit 11) the zip standard says CP437,
    and Python decodes it so; but most tools that leave the flag unset wrote UTF-8 (WikiArt's titles with
    accents came out as 'Ã©'). Names that are valid UTF-8 are read as UTF-8, the rest stay CP437."""
    if info.flag_bits & 0x800:
        return info.filename
    try:
        return info.filename.encode("cp437").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return info.filename


def _extract_zip(archive: Path, dest: Path) -> list[str]:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        for info in infos:
            info.filename = _zip_member_name(info)
            _check_member_name(info.filename, archive)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise UnsafeArchive(f"{archive}: member {info.filename!r} is a symbolic link; refusing to extract")
            # Zips written without Unix file types carry permission bits only: plain files.
            if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise UnsafeArchive(f"{archive}: member {info.filename!r} is a special file; refusing to extract")
        root = dest.resolve()
        for info in infos:
            target = (dest / info.filename).resolve()
            if root not in target.parents and target != root:
                raise UnsafeArchive(f"{archive}: member {info.filename!r} resolves outside the folder")
        zf.extractall(dest, members=infos)  # the infos themselves: their names may have been re-decoded
    return [i.filename for i in infos if not i.is_dir()]

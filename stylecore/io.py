"""Atomic file writes (a write killed halfway leaves the old file or none, never a half file), the
clean-up of what killed writes left behind, and output names from data that cannot leave their folder."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import unicodedata
import uuid
from pathlib import Path
from typing import Any, Iterator, Mapping

# What atomic_write_bytes and atomic_directory name their temporaries: ".<name>.<uuid4 hex>.tmp" / ".old"
_TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{32}\.(tmp|old)$")


class UnsafeName(ValueError):
    """A name taken from data (a sample key, a file name) that would not stay inside its output folder."""


def check_output_name(name: str) -> str:
    """``name`` if it is a safe relative output path (``/``-separated), else :class:`UnsafeName` saying why.

    Refused: empty names and parts, absolute paths, drive letters, ``.`` and ``..`` parts, backslashes,
    NUL and other control characters, and parts longer than 255 bytes (no file system stores them).
    """
    if not isinstance(name, str) or not name:
        raise UnsafeName(f"empty or non-text name {name!r}")
    if any(unicodedata.category(ch) == "Cc" for ch in name):
        raise UnsafeName(f"name {name!r} holds a NUL or control character")
    if "\\" in name:
        raise UnsafeName(f"name {name!r} holds a backslash")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise UnsafeName(f"name {name!r} is an absolute path")
    for part in name.split("/"):
        if part in ("", ".", ".."):
            raise UnsafeName(f"name {name!r} has an empty, '.' or '..' part")
        if len(part.encode("utf-8", "surrogatepass")) > 255:
            raise UnsafeName(f"name {name[:40]!r}… has a part longer than 255 bytes")
    return name


def confined_path(root: Path | str, name: str) -> Path:
    """``root / name`` for a name taken from data, refused (:class:`UnsafeName`) unless it stays inside
    ``root``, also through symbolic links already there."""
    check_output_name(name)
    root = Path(root)
    path = root / name
    resolved_root = root.resolve()
    if resolved_root not in path.resolve().parents:
        raise UnsafeName(f"name {name!r} resolves outside {root} (through a symbolic link)")
    return path


def remove_stale_temporaries(folder: Path | str) -> list[Path]:
    """Delete the temporaries killed atomic writes left in ``folder`` (not below it); returns them.

    Call it where one writer owns the folder, before that writer starts: a live write's temporary
    would be removed under it.
    """
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        if _TEMPORARY.match(entry.name):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write to a temporary file beside ``path``, fsync it, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: its 0600 mode would survive the rename; a plain exclusive create honours the umask.
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # make the rename itself durable
    finally:
        os.close(directory)


def atomic_write_text(path: Path | str, text: str, encoding: str = "utf-8") -> None:
    atomic_write_bytes(path, text.encode(encoding))


def csv_text(rows: list[Mapping[str, Any]]) -> str:
    """Rows as CSV text: the columns are every key in first-seen order (a row without one leaves it empty),
    floats to 6 significant digits."""
    import csv
    import io

    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def _fsync_directory(path: Path) -> None:
    directory = os.open(path, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


@contextlib.contextmanager
def atomic_directory(path: Path | str) -> Iterator[Path]:
    """Build a directory under a temporary name and move it to ``path`` only once it is complete.

    Yields the temporary directory to fill. On success every file in it is fsynced and it is renamed to
    ``path`` (an existing ``path`` is replaced: moved aside, then removed). On an exception the
    temporary directory is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    tmp.mkdir()
    try:
        yield tmp
        for file in tmp.rglob("*"):
            if file.is_file():
                with open(file, "rb") as handle:
                    os.fsync(handle.fileno())
        _fsync_directory(tmp)
        old = None
        if path.exists():
            old = path.parent / f".{path.name}.{uuid.uuid4().hex}.old"
            os.replace(path, old)
        os.replace(tmp, path)
        _fsync_directory(path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

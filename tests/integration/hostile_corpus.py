"""A corpus of odd and hostile inputs, generated on the spot (nothing binary is committed): images that are
not what they claim, archives that try to escape, shard keys that name paths, pickles that run code.

Every item says what a careful system must do with it: ``accept`` (odd but valid) or ``reject`` (with a reason
matching ``reason``). The hostile-input suite (tests/integration/test_hostile_inputs.py) runs each through
every entry point that takes it.
"""

from __future__ import annotations

import io
import os
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

#: a file created by the payload of every crafted pickle: if it exists, code ran
MARKER_ENV = "STYLECORE_HOSTILE_MARKER"


@dataclass
class Case:
    name: str  # the file name written into the corpus folder
    data: bytes
    expect: str  # "accept" or "reject"
    reason: str = ""  # a regular expression the rejection reason must match


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _gradient(size=(96, 64), mode="RGB") -> Image.Image:
    image = Image.linear_gradient("L").resize(size)
    return image.convert(mode) if mode != "L" else image


def _png_claiming(width: int, height: int) -> bytes:
    """A valid PNG header (IHDR) claiming ``width``×``height`` with a tiny compressed body: a decompression bomb."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + chunk(b"IEND", b"")


def odd_images() -> list[Case]:
    """Images a shard stage and a stylizer meet in the wild."""
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90°: stored 96×64, shown 64×96
    rgba = _gradient(mode="RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize((96, 64)))
    palette = _gradient().convert("P", palette=Image.Palette.ADAPTIVE)
    palette.info["transparency"] = 0
    sixteen = Image.fromarray(np.arange(96 * 64, dtype=np.uint16).reshape(64, 96) * 10)  # mode I;16
    jpeg = _encode(_gradient(), "JPEG")
    return [
        Case("plain.jpg", jpeg, "accept"),
        Case("rotated.jpg", _encode(_gradient(), "JPEG", exif=exif), "accept"),
        Case("cmyk.jpg", _encode(_gradient(mode="CMYK"), "JPEG"), "accept"),
        Case("gray.png", _encode(_gradient(mode="L"), "PNG"), "accept"),
        Case("alpha.png", _encode(rgba, "PNG"), "accept"),
        Case("palette.png", _encode(palette, "PNG"), "accept"),
        Case("sixteen-bit.png", _encode(sixteen, "PNG"), "accept"),
        Case("animated.gif", _encode(_gradient().convert("P"), "GIF", save_all=True,
                                     append_images=[_gradient((96, 64)).convert("P")]), "accept"),
        Case("image.webp", _encode(_gradient(), "WEBP"), "accept"),
        Case("image.tiff", _encode(_gradient(), "TIFF"), "accept"),
        Case("png-named.jpg", _encode(_gradient(), "PNG"), "accept"),  # the content decides, not the name
        Case("empty.jpg", b"", "reject", "zero-byte"),
        Case("truncated.jpg", jpeg[: len(jpeg) // 2], "reject", "corrupt or truncated"),
        Case("text.jpg", b"just some text, not an image\n" * 10, "reject", "not an image"),
        Case("html.png", b"<html><script>alert(1)</script></html>", "reject", "not an image"),
        # Ghostscript would run this if Pillow's EPS plugin were allowed to open it
        Case("postscript.jpg", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n(x) print\nshowpage\n", "reject",
             "not an image"),
        Case("portable-pixmap.jpg", _encode(_gradient(), "PPM"), "reject", "not an image"),  # a format not allowed
        Case("bomb.png", _png_claiming(60_000, 60_000), "reject", "decompression bomb"),
        Case("tiny.png", _encode(_gradient((8, 8)), "PNG"), "reject", "too small"),
    ]


def hostile_tars(folder: Path) -> list[tuple[Path, str]]:
    """(archive, the reason it must be refused for) for tar archives that try to leave their folder."""
    folder.mkdir(parents=True, exist_ok=True)

    def tar(name: str, build) -> Path:
        path = folder / name
        with tarfile.open(path, "w") as archive:
            info = tarfile.TarInfo("fine.txt")
            info.size = 2
            archive.addfile(info, io.BytesIO(b"ok"))
            build(archive)
        return path

    def member(name, kind=tarfile.REGTYPE, link=""):
        def add(archive):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, link
            data = b"pwned" if kind == tarfile.REGTYPE else b""
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        return add

    return [(tar("climb.tar", member("../../escaped.txt")), "climbs out"),
            (tar("absolute.tar", member("/tmp/stylecore-escaped.txt")), "absolute path"),
            (tar("symlink.tar", member("link", tarfile.SYMTYPE, "/etc/passwd")), "is a link"),
            (tar("hardlink.tar", member("hard", tarfile.LNKTYPE, "/etc/passwd")), "is a link"),
            (tar("fifo.tar", member("pipe", tarfile.FIFOTYPE)), "special file"),
            (tar("device.tar", member("dev", tarfile.CHRTYPE)), "special file")]


def hostile_zips(folder: Path) -> list[tuple[Path, str]]:
    folder.mkdir(parents=True, exist_ok=True)
    cases = []
    for name, member, reason in (("climb.zip", "../../escaped.txt", "climbs out"),
                                 ("absolute.zip", "/tmp/stylecore-escaped.txt", "absolute path"),
                                 ("drive.zip", "C:/escaped.txt", "absolute path")):
        path = folder / name
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("fine.txt", "ok")
            archive.writestr(zipfile.ZipInfo(member), "pwned")
        cases.append((path, reason))
    link = zipfile.ZipInfo("link")
    link.external_attr = 0o120777 << 16
    with zipfile.ZipFile(folder / "symlink.zip", "w") as archive:
        archive.writestr(link, "../../etc/passwd")
    cases.append((folder / "symlink.zip", "symbolic link"))
    return cases


#: sample keys that name paths: a stylization named after them would land outside its folder (a WebDataset key
#: ends at the first dot of the member name, so ".." itself arrives as the empty key)
HOSTILE_KEYS = ("../../escape", "a/../../b", "back\\slash", "new\nline", "x/./y", "")


def hostile_keys(absolute_root: Path) -> list[str]:
    """:data:`HOSTILE_KEYS` and an absolute path under ``absolute_root`` (a test's own folder, outside the output)."""
    return [*HOSTILE_KEYS, f"{absolute_root}/absolute-escape"]


def shard_with_keys(path: Path, keys: list[str], image: bytes) -> Path:
    """A WebDataset tar holding one ``jpg`` per key, the keys written verbatim (as a hostile producer would)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as archive:
        for key in keys:
            info = tarfile.TarInfo(f"{key}.jpg")
            info.size = len(image)
            archive.addfile(info, io.BytesIO(image))
    return path


class RunsCode:
    """Unpickling this calls os.system: it creates the file named by $STYLECORE_HOSTILE_MARKER."""

    def __reduce__(self):
        return (os.system, (f'touch "${MARKER_ENV}"',))


def crafted_pickle() -> bytes:
    """A torch-saved dict that runs a shell command when unpickled with weights_only=False."""
    import torch

    buffer = io.BytesIO()
    torch.save({"optimizer": RunsCode(), "step": 1}, buffer)
    return buffer.getvalue()

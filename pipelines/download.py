"""DVC stage `download@<source>`: fetch, verify and extract one source into data/raw/<source>.

    python -m pipelines.download --source places365

Layout of ``data/raw/<source>/``: ``archives/`` (verified downloads), ``files/`` (extracted, or
generated for synthetic sources) and ``SOURCE.json`` (status, licence, redistribution flag, every
file's URL and digests). A source outside the active profile gets a ``SOURCE.json`` that says so and
why. Reruns skip verified files, resume partial ones, and re-extract only what changed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from pipelines.fetch import DownloadError, UnsafeArchive, download, extract
from pipelines.sources import CatalogueError, Source, load_params, selected_source
from pipelines.stage import run_stage
from stylecore.io import atomic_write_text

log = logging.getLogger("pipelines.download")


def _write_status(folder: Path, record: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "SOURCE.json", json.dumps(record, indent=2, sort_keys=True) + "\n")


def _previous(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / "SOURCE.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def generate_synthetic(source: Source, files: Path) -> dict[str, Any]:
    """Write the demo images (PNG, deterministic from the seed) and labels.json."""
    from stylecore.data import save_image
    from stylecore.synthetic import PAINTERS_PER_FAMILY, STYLE_FAMILIES, synthetic_artwork, synthetic_photo

    size, seed = int(source.options.get("size", 128)), int(source.options.get("seed", 0))
    counts = source.options.get("count") or {"train": 64, "val": 16}
    labels: dict[str, dict[str, Any]] = {}
    tmp = files.parent / ".files.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    for split_index, (split, count) in enumerate(sorted(counts.items())):
        for i in range(int(count)):
            image_seed = seed * 1_000_003 + split_index * 100_003 + i
            if source.role == "content":
                path = f"{split}/photo-{i:05d}.png"
                image = synthetic_photo(image_seed, size)
                labels[path] = {"scene": "synthetic", "synthetic": True}
            else:
                family = STYLE_FAMILIES[i % len(STYLE_FAMILIES)]
                painter = (i // len(STYLE_FAMILIES)) % PAINTERS_PER_FAMILY
                artist = f"{family}-painter-{painter}"
                path = f"{split}/{family}-{i:05d}.png"
                image = synthetic_artwork(image_seed, family, size, painter)
                labels[path] = {"style": family, "artist": artist, "synthetic": True}
            save_image(image, tmp / path)
    atomic_write_text(tmp / "labels.json", json.dumps(labels, indent=1, sort_keys=True) + "\n")
    shutil.rmtree(files, ignore_errors=True)
    tmp.rename(files)
    return {"images": len(labels), "size": size, "seed": seed, "count": counts}


def copy_folder(source: Source, files: Path) -> dict[str, Any]:
    """A ``folder`` source: its images (and labels CSV) copied into ``files`` (hard links where the file system
    allows), built under a temporary name and swapped in whole. A local path or any fsspec URI."""
    from stylecore.imaging import IMAGE_SUFFIXES
    from stylecore.io import confined_path
    from stylecore.shards import is_remote, local_path

    location = str(source.options["path"])
    wanted = lambda name: name.lower().endswith(IMAGE_SUFFIXES) or name == source.options.get("csv")  # noqa: E731
    tmp = files.parent / ".files.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    count = 0
    if is_remote(location):
        from pipelines.storage import filesystem

        fs, root = filesystem(location)
        base = root.rstrip("/") + "/"
        for remote in sorted(fs.find(root)):
            relative = remote[len(base):] if remote.startswith(base) else remote.rsplit("/", 1)[-1]
            if wanted(relative):
                target = confined_path(tmp, relative)
                target.parent.mkdir(parents=True, exist_ok=True)
                fs.get_file(remote, str(target))
                count += 1
    else:
        root = local_path(location).expanduser()
        if not root.is_dir():
            raise CatalogueError(f"catalogue/{source.name}.yaml: path {root} is not a folder")
        for path in sorted(root.rglob("*")):
            relative = path.relative_to(root).as_posix()
            if path.is_file() and wanted(relative):
                target = confined_path(tmp, relative)
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(path, target)  # no second copy of a large collection on the same file system
                except OSError:
                    shutil.copy2(path, target)
                count += 1
    if not count:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CatalogueError(f"catalogue/{source.name}.yaml: path {location} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    shutil.rmtree(files, ignore_errors=True)
    tmp.rename(files)
    return {"images": count, "path": location}


def fetch_source(source: Source, folder: Path, progress: bool = True) -> dict[str, Any]:
    previous = {entry["name"]: entry for entry in _previous(folder).get("files", [])}
    archives, files = folder / "archives", folder / "files"
    records = []
    for spec in source.files:
        sha256 = spec.sha256 or previous.get(spec.name, {}).get("sha256_recorded")
        result = download(spec.url, archives / spec.name, md5=spec.md5, sha256=sha256, size=spec.size,
                          progress=progress)
        record = {"name": spec.name, "url": spec.url, "md5": spec.md5, "sha256": result["sha256"],
                  "status": result["status"], "bytes": (archives / spec.name).stat().st_size}
        if not spec.md5 and not spec.sha256:
            record["sha256_recorded"] = result["sha256"]
            if not sha256:
                print(f"  {spec.name}: no published checksum; recorded sha256 {result['sha256']} — it is enforced "
                      f"from now on; pin it in catalogue/{source.name}.yaml (files) to enforce it everywhere")
        extracted_digest = previous.get(spec.name, {}).get("extracted_from")
        if spec.extract:
            if extracted_digest == result["sha256"] and files.is_dir():
                record["extracted"] = "kept (same archive as last time)"
            else:
                names = extract(archives / spec.name, files)
                record["extracted"] = f"{len(names)} files"
            record["extracted_from"] = result["sha256"]
        print(f"  {spec.name}: {result['status']}, verified (sha256 {result['sha256'][:12]}…), "
              f"{record.get('extracted', 'not extracted')}")
        records.append(record)
    return {"files": records}


def run(source_name: str, params_path: Path, raw_root: Path, progress: bool = True) -> dict[str, Any]:
    params = load_params(params_path)
    source, profile = selected_source(params, source_name)
    folder = raw_root / source_name
    base = {"source": source_name, "kind": source.kind, "role": source.role, "licence": source.licence,
            "redistribution": source.redistribution, "profile": profile}
    if profile not in source.profiles:
        reason = f"not in profile {profile!r} (used by: {', '.join(source.profiles) or 'no profile'})"
        print(f"download@{source_name}: skipped, {reason}")
        shutil.rmtree(folder / "files", ignore_errors=True)
        record = {**base, "status": "skipped", "reason": reason, "files": _previous(folder).get("files", [])}
        _write_status(folder, record)
        return record
    print(f"download@{source_name} ({source.kind}, {source.role}) — licence: {source.licence}")
    if not source.redistribution:
        print("  redistribution: NOT allowed — shards of this source are marked private and must not be published")
    if source.kind == "synthetic":
        details = generate_synthetic(source, folder / "files")
        print(f"  generated {details['images']} images ({details['size']}², seed {details['seed']})")
    elif source.kind == "folder":
        details = copy_folder(source, folder / "files")
        print(f"  copied {details['images']} files from {details['path']}")
    else:
        details = fetch_source(source, folder, progress=progress)
    record = {**base, "status": "complete", **details}
    _write_status(folder, record)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--raw", default="data/raw", help="root of the raw data (default data/raw)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run_stage(f"download@{args.source}", lambda: run(args.source, Path(args.params), Path(args.raw),
                                                            progress=not args.no_progress),
                     (CatalogueError, DownloadError, UnsafeArchive))


if __name__ == "__main__":
    from pipelines.stage_server import stage_main

    sys.exit(stage_main(main))

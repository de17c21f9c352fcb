"""DVC stage `shard@<source>-<split>`: data/raw/<source>/files → data/shards/<source>-<split>/.

    python -m pipelines.shard --source coco --split train

Inputs are listed in a deterministic order (sorted source paths) with their labels, prepared in
parallel worker processes (decode, check, RGB, resize to ``shard.store_size``, JPEG) and written in
order by one writer, so memory stays bounded and a rerun gives byte-identical shards. Bad inputs are
listed in ``manifest.json`` with the reason; the stage never dies on one file. The folder appears
only when complete (built under a temporary name, then renamed).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import multiprocessing
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

from pipelines import storage
from pipelines.sources import CatalogueError, list_items, load_params, selected_source
from pipelines.stage import run_stage
from stylecore.io import atomic_write_text
from stylecore.shards import MANIFEST, Prepared, Rejected, SourceItem, prepare_image, write_shards

def shard_settings(params: dict) -> dict[str, int]:
    """params.yaml's ``shard`` section, checked (:class:`pipelines.settings.ShardSettings`)."""
    from pipelines.settings import read
    from stylecore.config import to_dict

    return to_dict(read(params, "shard"))


def _prepare(item: SourceItem, root: Path, source: str, split: str, settings: dict[str, int]) -> Prepared | Rejected:
    try:
        return prepare_image(root, item, source, split, settings["store_size"], settings["jpeg_quality"],
                             settings["min_side"], settings["max_pixels"])
    except Exception as error:  # one bad file must never stop the stage
        return Rejected(item.path, f"unexpected {type(error).__name__}: {error}")


def prepared_in_order(items: list[SourceItem], root: Path, source: str, split: str, settings: dict[str, int],
                      progress: bool) -> Iterator[Prepared | Rejected]:
    work = functools.partial(_prepare, root=root, source=source, split=split, settings=settings)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(items), unit="img", desc=f"shard {source}-{split}", disable=None)  # no tty: no bar
    workers = min(settings["workers"], max(1, len(items)))
    if workers == 1:
        results: Iterator = map(work, items)
        pool = None
    else:
        # spawn: forking a process that may hold threads (torch, Ray) is unsafe.
        pool = multiprocessing.get_context("spawn").Pool(workers)
        results = pool.imap(work, items, chunksize=16)  # ordered, streaming: bounded memory
    try:
        for result in results:
            if bar is not None:
                bar.update(1)
            yield result
    finally:
        if pool is not None:
            pool.terminate()
        if bar is not None:
            bar.close()


def run(source_name: str, split: str, params_path: Path, raw_root: Path, shards_root: Path,
        progress: bool = True) -> dict[str, Any]:
    params = load_params(params_path)
    source, profile = selected_source(params, source_name)
    settings = shard_settings(params)
    mirror = storage.settings(params)["shards"]  # checked before any work
    out = shards_root / f"{source_name}-{split}"
    base = {"source": source_name, "split": split, "role": source.role, "licence": source.licence,
            "redistribution": source.redistribution, "publish": source.redistribution, "settings": settings,
            "profile": profile}
    status = json.loads((raw_root / source_name / "SOURCE.json").read_text()) \
        if (raw_root / source_name / "SOURCE.json").is_file() else {}
    tmp = shards_root / f".{out.name}.{uuid.uuid4().hex}.tmp"
    tmp.mkdir(parents=True)
    try:
        if profile not in source.profiles or status.get("status") != "complete":
            reason = (f"not in profile {profile!r}" if profile not in source.profiles
                      else f"download@{source_name} is not complete ({status.get('status', 'never ran')})")
            print(f"shard@{source_name}-{split}: skipped, {reason}")
            manifest = {**base, "skipped": reason, "shards": [], "samples": 0, "per_label": {}, "rejected": []}
            atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=2) + "\n")
        else:
            files = raw_root / source_name / "files"
            items = list_items(source, files, split)
            # Enough shards for every DDP rank × loader worker, never more than maxcount per shard.
            maxcount = max(1, min(settings["maxcount"], math.ceil(len(items) / settings["min_shards"])))
            started = time.perf_counter()
            manifest = write_shards(prepared_in_order(items, files, source_name, split, settings, progress), tmp,
                                    prefix=f"{source_name}-{split}", maxcount=maxcount,
                                    extra_manifest={**base, "inputs": len(items)})
            elapsed = time.perf_counter() - started
            print(f"shard@{source_name}-{split}: {manifest['samples']} samples in {len(manifest['shards'])} shards, "
                  f"{len(manifest['rejected'])} rejected, {len(items) / max(elapsed, 1e-9):.0f} images/s")
            for entry in manifest["rejected"][:20]:
                print(f"  rejected {entry['path']}: {entry['reason']}")
            if len(manifest["rejected"]) > 20:
                print(f"  … and {len(manifest['rejected']) - 20} more (see {out / MANIFEST})")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if mirror is not None:  # a cluster's workers read the shards from there (params.yaml: storage.shards)
        print(f"shard@{source_name}-{split}: mirrored to {storage.mirror_shards(out, mirror)}")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True)
    parser.add_argument("--split", required=True, choices=["train", "val"])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--raw", default="data/raw")
    parser.add_argument("--shards", default="data/shards")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    return run_stage(f"shard@{args.source}-{args.split}", lambda: run(
        args.source, args.split, Path(args.params), Path(args.raw), Path(args.shards),
        progress=not args.no_progress), (CatalogueError, FileNotFoundError))


if __name__ == "__main__":
    from pipelines.stage_server import stage_main

    sys.exit(stage_main(main))

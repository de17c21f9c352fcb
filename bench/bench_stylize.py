"""Ray Data batch stylization against a plain loop over the same Stylizer in one process: images/s.

Both sides stylize the same generated photos (PNG files, nothing downloaded) with the same AdaIN
checkpoint (random:0 encoder) and round-robin styles, writing JPEG files. The plain loop decodes,
resizes, stylizes and encodes each image in turn with all CPU threads; the Ray side runs the
pipeline of ``pipelines.stylize`` (decode tasks, an actor pool of 1 or 2 models, each writing its
batches). Figures: images/s of the stylization itself, start-up excluded (for Ray: from the first
committed batch to the last), and the whole call's wall time. The issue's goal: ≥ 0.8× the plain
loop per core, scaling close to linear with actors.

    python bench/bench_stylize.py                      # 256 images at 128², CPU
    python bench/bench_stylize.py --size 512 --images 1000 --gpus-per-actor 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.stylize_commit import PARTS, encode_output  # noqa: E402
from pipelines.stylize_dataset import stylize_dataset  # noqa: E402
from pipelines.stylize_inputs import decode_resize  # noqa: E402
from stylecore.data import save_image  # noqa: E402
from stylecore.stylize import Stylizer  # noqa: E402
from stylecore.synthetic import STYLE_FAMILIES, synthetic_artwork, synthetic_photo  # noqa: E402
from stylecore.training import Trainer  # noqa: E402


def plain_loop(checkpoint: Path, photos: list[Path], styles: list[Path], size: int, output: Path) -> float:
    stylizer = Stylizer(checkpoint, style_size=size)
    prepared = [stylizer.prepare_styles(decode_resize(s.read_bytes(), None).float() / 255) for s in styles]
    started = time.perf_counter()
    for index, path in enumerate(photos):
        image = decode_resize(path.read_bytes(), size).float() / 255
        result = stylizer(image, prepared[index % len(prepared)])
        (output / f"{path.stem}.jpg").write_bytes(encode_output(result, "jpg", 92))
    return len(photos) / (time.perf_counter() - started)


def ray_pipeline(checkpoint: Path, photos: Path, styles: Path, size: int, output: Path, actors: int,
                 gpus: float, batch: int) -> tuple[float, float]:
    started = time.perf_counter()
    manifest = stylize_dataset(photos, styles, str(checkpoint), output, style_size=size, size=size, batch_size=batch,
                               actors=actors, gpus_per_actor=gpus, output_format="files", progress=False)
    wall = time.perf_counter() - started
    commits = sorted(p.stat().st_mtime for p in (output / PARTS).glob("*.json"))
    first_batch = len(json.loads(sorted((output / PARTS).glob("*.json"), key=lambda p: p.stat().st_mtime)[0]
                                 .read_text())["written"])
    steady = (manifest["written"] - first_batch) / max(commits[-1] - commits[0], 1e-9)
    return steady, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--gpus-per-actor", type=float, default=0.0)
    args = parser.parse_args()
    import ray

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for i in range(args.images):
            save_image(synthetic_photo(i, args.size), root / "photos" / f"photo{i:05d}.png")
        for i, family in enumerate(STYLE_FAMILIES):
            save_image(synthetic_artwork(i, family, args.size), root / "styles" / f"{family}.png")
        trainer = Trainer({"model": "adain", "steps": 1, "model_params": {"encoder_weights": "random:0"}})
        checkpoint = trainer.save_checkpoint(root / "model")
        photos, styles = sorted((root / "photos").glob("*.png")), sorted((root / "styles").glob("*.png"))
        (root / "plain").mkdir()
        plain = plain_loop(checkpoint, photos, styles, args.size, root / "plain")
        results = {"plain_loop_images_per_second": round(plain, 2), "threads": torch.get_num_threads()}
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        try:
            for actors in (1, 2):
                out = root / f"ray-{actors}"
                steady, wall = ray_pipeline(checkpoint, root / "photos", root / "styles", args.size, out, actors,
                                            args.gpus_per_actor, args.batch)
                results[f"ray_{actors}_actor_images_per_second"] = round(steady, 2)
                results[f"ray_{actors}_actor_wall_seconds"] = round(wall, 1)
                shutil.rmtree(out)
        finally:
            ray.shutdown()
    print(json.dumps({"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                      "images": args.images, "size": args.size, "batch": args.batch, **results}, indent=2))


if __name__ == "__main__":
    main()

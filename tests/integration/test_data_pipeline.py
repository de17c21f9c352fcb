"""download → verify → extract → shard → read back, for the three real layouts over loopback HTTP,
bad images, and the DVC pipeline in a temporary git repository."""

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import yaml
from PIL import Image

from pipelines import download, shard
from pipelines.sources import load_params
from stylecore.shards import ShardImages, shard_urls

from loopback_http import LoopbackServer
from workspace_helpers import write_params

REPO = Path(__file__).resolve().parents[2]


def _jpeg(colour, size=(96, 80)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="JPEG")
    return buffer.getvalue()


def _tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _zip(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def build_archives(www: Path) -> dict[str, list[dict]]:
    """Miniature archives laid out like the real ones; returns the catalogue's file entries (no URLs)."""
    www.mkdir(parents=True, exist_ok=True)
    # Places365-Standard: file lists + categories in one tar, images in val_256.tar / the train tar.
    categories = "/a/abbey 0\n/b/beach 1\n"
    train_list = "".join(f"/{c[0]}/{c}/{i:08d}.jpg {k}\n" for k, c in enumerate(["abbey", "beach"]) for i in range(3))
    val_list = "".join(f"Places365_val_{i:08d}.jpg {i % 2}\n" for i in range(1, 5))
    _tar(www / "filelist_places365-standard.tar", {"categories_places365.txt": categories.encode(),
                                                    "places365_train_standard.txt": train_list.encode(),
                                                    "places365_val.txt": val_list.encode()})
    _tar(www / "val_256.tar", {f"val_256/Places365_val_{i:08d}.jpg": _jpeg((i * 40, 90, 20)) for i in range(1, 5)})
    _tar(www / "train_256_places365standard.tar",
         {f"data_256/{c[0]}/{c}/{i:08d}.jpg": _jpeg((10, i * 50, 99)) for c in ["abbey", "beach"] for i in range(3)})
    # MS-COCO 2017: flat folders in zips.
    _zip(www / "val2017.zip", {f"val2017/{i:012d}.jpg": _jpeg((i * 30, 30, 30)) for i in range(1, 4)})
    _zip(www / "train2017.zip", {f"train2017/{i:012d}.jpg": _jpeg((30, i * 30, 30)) for i in range(1, 6)})
    # WikiArt (ArtGAN): images by style folder, CSV splits per label kind.
    paintings = {"Impressionism/claude-monet_water-lilies.jpg": 0, "Impressionism/claude-monet_haystacks.jpg": 0,
                 "Cubism/pablo-picasso_guitar.jpg": 1, "Cubism/georges-braque_violin.jpg": 1}
    _zip(www / "wikiart.zip", {f"wikiart/{p}": _jpeg((200, k * 100, 50)) for k, p in enumerate(paintings)})
    artists = {"claude-monet": 0, "pablo-picasso": 1, "georges-braque": 2}
    train, val = list(paintings)[:3], list(paintings)[3:]
    csvs = {
        "wikiart_csv/style_class.txt": b"0 Impressionism\n1 Cubism\n",
        "wikiart_csv/artist_class.txt": b"0 claude-monet\n1 pablo-picasso\n2 georges-braque\n",
        "wikiart_csv/Style_train.csv": "".join(f"{p},{paintings[p]}\n" for p in train).encode(),
        "wikiart_csv/Style_val.csv": "".join(f"{p},{paintings[p]}\n" for p in val).encode(),
        "wikiart_csv/Artist_train.csv": "".join(f"{p},{artists[p.split('/')[1].split('_')[0]]}\n" for p in train).encode(),
        "wikiart_csv/Artist_val.csv": "".join(f"{p},{artists[p.split('/')[1].split('_')[0]]}\n" for p in val).encode(),
    }
    _zip(www / "wikiart_csv.zip", csvs)
    md5 = lambda name: hashlib.md5((www / name).read_bytes()).hexdigest()
    return {
        "places365": [{"name": n, "md5": md5(n)} for n in
                      ("filelist_places365-standard.tar", "val_256.tar", "train_256_places365standard.tar")],
        "coco": [{"name": n, "md5": md5(n)} for n in ("val2017.zip", "train2017.zip")],
        "wikiart": [{"name": "wikiart_csv.zip"}, {"name": "wikiart.zip", "sha256": None}],
    }


def full_params(www_files: dict, server: LoopbackServer) -> dict:
    params = load_params(REPO / "params.yaml")
    params["profile"] = "full"
    for source, entries in www_files.items():
        params["sources"][source]["files"] = [{**e, "url": server.url(e["name"])} for e in entries]
    params["shard"]["workers"] = 1
    return params


@pytest.fixture
def mirror(tmp_path):
    files = build_archives(tmp_path / "www")
    with LoopbackServer(tmp_path / "www") as server:
        params = full_params(files, server)
        path = tmp_path / "params.yaml"
        path.write_text(yaml.safe_dump(params))
        yield path, server, tmp_path


EXPECTED = {  # source-split → (samples, label field, label counts)
    "places365-train": (6, "scene", {"a/abbey": 3, "b/beach": 3}),
    "places365-val": (4, "scene", {"a/abbey": 2, "b/beach": 2}),
    "coco-train": (5, None, None),
    "coco-val": (3, None, None),
    "wikiart-train": (3, "style", {"Impressionism": 2, "Cubism": 1}),
    "wikiart-val": (1, "artist", {"georges-braque": 1}),
}


def test_the_three_real_layouts_go_from_loopback_http_to_readable_shards(mirror, local_ray):
    params, server, tmp = mirror
    raw, shards = tmp / "raw", tmp / "shards"
    for source in ("places365", "coco", "wikiart"):
        record = download.run(source, params, raw, progress=False)
        assert record["status"] == "complete" and record["redistribution"] is False
        assert all(f["status"] == "downloaded" for f in record["files"])
    recorded = json.loads((raw / "wikiart" / "SOURCE.json").read_text())
    assert all(len(f["sha256_recorded"]) == 64 for f in recorded["files"])  # no published checksum: pinned now
    for name, (count, field, labels) in EXPECTED.items():
        source, split = name.split("-")
        manifest = shard.run(source, split, params, raw, shards, progress=False)
        assert manifest["samples"] == count and manifest["rejected"] == [] and manifest["publish"] is False
        images = ShardImages(shards / name)
        assert len(images) == count
        key, image = images[0]
        assert image.shape[0] == 3 and min(image.shape[1:]) == 80  # never upscaled: 96x80 stays
        if field:
            assert manifest["per_label"][field] == labels
            assert field in images.metadata(0)["labels"]
    import ray.data

    rows = ray.data.read_webdataset(shard_urls(shards / "places365-train")).take_all()
    assert len(rows) == 6 and rows[0]["jpg"].shape[-1] == 3
    assert {json.loads(r["json"])["labels"]["scene"] if isinstance(r["json"], (bytes, str)) else
            r["json"]["labels"]["scene"] for r in rows} == {"a/abbey", "b/beach"}

    # A second run is a verified no-op: nothing is downloaded again.
    again = download.run("coco", params, raw, progress=False)
    assert [f["status"] for f in again["files"]] == ["present", "present"]


def test_a_changed_archive_fails_its_checksum_and_keeps_nothing(mirror):
    params, server, tmp = mirror
    (tmp / "www" / "val2017.zip").write_bytes(b"tampered")
    with pytest.raises(download.DownloadError, match="md5"):
        download.run("coco", params, tmp / "raw", progress=False)
    assert not (tmp / "raw" / "coco" / "archives" / "val2017.zip").exists()
    assert not list((tmp / "raw" / "coco" / "archives").glob("*.part"))


def test_every_kind_of_bad_image_is_rejected_and_listed(tmp_path):
    root = tmp_path / "raw" / "demo_photos" / "files"
    (root / "train").mkdir(parents=True)
    good = {"rgb.jpg": Image.new("RGB", (90, 70), (1, 2, 3)), "gray.png": Image.new("L", (80, 80), 7),
            "palette.png": Image.new("RGB", (80, 80), (9, 9, 9)).convert("P"),
            "cmyk.jpg": Image.new("CMYK", (80, 80), (0, 50, 50, 0)), "alpha.png": Image.new("RGBA", (80, 80), (0, 0, 0, 0)),
            "deep.png": Image.new("I;16", (80, 80), 40000)}
    for name, image in good.items():
        image.save(root / "train" / name)
    full = io.BytesIO()
    Image.new("RGB", (200, 200), (5, 5, 5)).save(full, format="JPEG")
    (root / "train" / "truncated.jpg").write_bytes(full.getvalue()[: len(full.getvalue()) // 2])
    (root / "train" / "empty.jpg").write_bytes(b"")
    (root / "train" / "notes.jpg").write_text("not an image at all")
    Image.new("RGB", (20, 20)).save(root / "train" / "tiny.png")
    Image.new("1", (3000, 3000)).save(root / "train" / "bomb.png")
    labels = {f"train/{p.name}": {"scene": "synthetic"} for p in (root / "train").iterdir()}
    (root / "labels.json").write_text(json.dumps(labels))
    (root.parent / "SOURCE.json").write_text(json.dumps({"status": "complete"}))
    params = load_params(REPO / "params.yaml")
    params["shard"].update(max_pixels=4_000_000, workers=2)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    manifest = shard.run("demo_photos", "train", tmp_path / "params.yaml", tmp_path / "raw", tmp_path / "shards",
                         progress=False)
    reasons = {entry["path"]: entry["reason"] for entry in manifest["rejected"]}
    assert set(reasons) == {"train/truncated.jpg", "train/empty.jpg", "train/notes.jpg", "train/tiny.png",
                            "train/bomb.png"}
    assert "zero-byte" in reasons["train/empty.jpg"] and "too small" in reasons["train/tiny.png"]
    assert "decompression bomb" in reasons["train/bomb.png"] and "not an image" in reasons["train/notes.jpg"]
    assert "truncated" in reasons["train/truncated.jpg"]
    assert manifest["samples"] == len(good)
    images = ShardImages(tmp_path / "shards" / "demo_photos-train")
    assert all(images[i][1].shape[0] == 3 for i in range(len(images)))


def _dvc(repo: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, capture_output=True, text=True,
                            env=env, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_dvc_repro_builds_the_demo_shards_then_reruns_only_what_a_param_changes(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(REPO / "dvc.yaml", repo)
    params = load_params(REPO / "params.yaml")
    params["sources"]["demo_photos"]["count"] = {"train": 12, "val": 4}
    params["sources"]["demo_artworks"]["count"] = {"train": 10, "val": 5}
    write_params(repo, params)
    for folder in ("pipelines", "stylecore"):  # stage deps are paths in the repository
        shutil.copytree(REPO / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    _dvc(repo, "init", "-q")
    _dvc(repo, "config", "core.analytics", "false")
    first = _dvc(repo, "repro", "shard")  # the data stages and what they depend on (train has its own test)
    assert "shard@demo_photos-train" in first
    manifest = json.loads((repo / "data/shards/demo_artworks-train/manifest.json").read_text())
    assert manifest["samples"] == 10 and len(manifest["shards"]) == 4
    assert manifest["per_label"]["style"] == {"checks": 2, "dots": 2, "noise": 2, "stripes": 2, "waves": 2}
    skipped = json.loads((repo / "data/shards/coco-train/manifest.json").read_text())
    assert skipped["skipped"] == "not in profile 'demo'"
    digests = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in (repo / "data/shards/demo_photos-train").iterdir()}

    assert "Running stage" not in _dvc(repo, "repro", "shard")  # a second repro is a no-op

    _dvc(repo, "repro", "-f", "shard@demo_photos-train")  # re-sharding gives identical bytes
    assert digests == {p.name: hashlib.md5(p.read_bytes()).hexdigest()
                       for p in (repo / "data/shards/demo_photos-train").iterdir()}

    params["shard"]["store_size"] = 64
    write_params(repo, params)
    rerun = _dvc(repo, "repro", "shard")
    ran = {line.split("'")[1] for line in rerun.splitlines() if line.startswith("Running stage")}
    assert ran == {f"shard@{s}-{split}" for s in ("demo_photos", "demo_artworks", "places365", "coco", "wikiart")
                   for split in ("train", "val")}
    stored = ShardImages(repo / "data/shards/demo_photos-train")[0][1]
    assert min(stored.shape[1:]) == 64

    # a source's catalogue file is a dependency of its own stages only
    params["sources"]["demo_artworks"]["count"] = {"train": 10, "val": 6}
    write_params(repo, params)
    rerun = _dvc(repo, "repro", "shard")
    ran = {line.split("'")[1] for line in rerun.splitlines() if line.startswith("Running stage")}
    assert ran == {"download@demo_artworks", "shard@demo_artworks-train", "shard@demo_artworks-val"}

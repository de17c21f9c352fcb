"""Bring your own data: a `folder` source (a local folder or an fsspec URI) through the download and shard
stages, with labels from subfolders or a CSV, split folders or a stable hash split, and the same cleaning."""

import io
from pathlib import Path

import pytest
import yaml
from PIL import Image

from pipelines import download, shard
from pipelines.sources import CatalogueError, parse_sources
from stylecore.shards import ShardImages

REPO = Path(__file__).resolve().parents[2]
SHARD = {"store_size": 48, "jpeg_quality": 90, "min_side": 16, "max_pixels": 10**7, "maxcount": 100, "min_shards": 1,
         "workers": 1}


def _image(path, colour, size=(64, 48), fmt="JPEG"):
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format=fmt)
    path.write_bytes(buffer.getvalue())


def _params(tmp_path, **source):
    params = {"profile": "mine", "profiles": {"mine": ["my_paintings"]},
              "sources": {"my_paintings": {"kind": "folder", "role": "style", "licence": "my own", **source}},
              "shard": SHARD, "storage": {"shards": None, "checkpoints": None}}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def _build(tmp_path, params):
    raw, shards = tmp_path / "raw", tmp_path / "shards"
    download.run("my_paintings", params, raw, progress=False)
    return {split: shard.run("my_paintings", split, params, raw, shards, progress=False) for split in ("train", "val")}


def test_a_folder_with_split_and_label_subfolders_is_sharded_with_its_labels_and_rejects(tmp_path):
    mine = tmp_path / "mine"
    for split, count in (("train", 3), ("val", 1)):
        for artist in ("monet", "hokusai"):
            for i in range(count):
                _image(mine / split / artist / f"{i}.jpg", (i * 60, 100, 30))
    (mine / "train" / "monet" / "notes.txt").write_text("not an image, not copied")
    (mine / "train" / "monet" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    _image(mine / "train" / "hokusai" / "tiny.png", (1, 2, 3), size=(8, 8), fmt="PNG")
    manifests = _build(tmp_path, _params(tmp_path, path=str(mine), label_name="artist"))
    train, val = manifests["train"], manifests["val"]
    assert train["samples"] == 6 and val["samples"] == 2
    assert train["per_label"] == {"artist": {"hokusai": 3, "monet": 3}}
    assert sorted(r["path"] for r in train["rejected"]) == ["train/hokusai/tiny.png", "train/monet/broken.jpg"]
    assert {r["path"]: r["reason"].split(":")[0] for r in train["rejected"]}["train/hokusai/tiny.png"] == "too small"
    images = ShardImages(tmp_path / "shards" / "my_paintings-val")
    assert sorted(images.metadata(i)["labels"]["artist"] for i in range(len(images))) == ["hokusai", "monet"]
    assert not (tmp_path / "raw" / "my_paintings" / "files" / "train" / "monet" / "notes.txt").exists()


def test_a_flat_folder_splits_by_a_stable_hash_and_takes_labels_from_a_csv(tmp_path):
    mine = tmp_path / "photos"
    for i in range(120):
        _image(mine / f"img{i:03d}.png", (i * 2, 20, 200), size=(24, 20), fmt="PNG")
    (mine / "labels.csv").write_text("path,scene\n" + "".join(f"img{i:03d}.png,{'beach' if i % 2 else 'forest'}\n"
                                                             for i in range(120)))
    params = _params(tmp_path, path=f"file://{mine}", labels="csv", csv="labels.csv", val_fraction=0.25)
    manifests = _build(tmp_path, params)
    train, val = manifests["train"], manifests["val"]
    assert train["samples"] + val["samples"] == 120 and 15 <= val["samples"] <= 45  # 25 % of 120 ± 3 sd
    keys = [{s["__key__"] for s in ShardImages(tmp_path / "shards" / f"my_paintings-{split}").samples}
            for split in ("train", "val")]
    assert not keys[0] & keys[1]  # a file is in one split only
    counts = {**train["per_label"]["scene"]}
    for name, value in val["per_label"]["scene"].items():
        counts[name] = counts.get(name, 0) + value
    assert counts == {"beach": 60, "forest": 60}
    again = _build(tmp_path, params)  # the split is a function of the path: the same on every run
    assert again["val"]["samples"] == val["samples"]


def test_folder_source_settings_are_checked_before_any_copy(tmp_path):
    base = {"profile": "mine", "profiles": {"mine": ["x"]}}
    for source, message in (({"kind": "folder", "role": "style"}, "path must name the folder"),
                            ({"kind": "folder", "role": "style", "path": "p", "labels": "dirs"}, "not one of subfolders"),
                            ({"kind": "folder", "role": "style", "path": "p", "labels": "csv"}, "csv must name"),
                            ({"kind": "folder", "role": "style", "path": "p", "val_fraction": 1.5}, r"in \[0, 1\)"),
                            ({"kind": "folder", "role": "style", "path": "p", "lables": "csv"}, "unknown key")):
        with pytest.raises(CatalogueError, match=message):
            parse_sources({**base, "sources": {"x": source}})
    with pytest.raises(CatalogueError, match="is not a folder"):
        download.run("my_paintings", _params(tmp_path, path=str(tmp_path / "nowhere")), tmp_path / "raw", progress=False)


def test_the_catalogue_folder_beside_params_yaml_is_its_sources_one_file_each(tmp_path):
    from pipelines.sources import load_params

    path = _params(tmp_path)
    params = yaml.safe_load(path.read_text())
    entry = params.pop("sources")["my_paintings"]
    path.write_text(yaml.safe_dump(params))
    (tmp_path / "catalogue").mkdir()
    (tmp_path / "catalogue" / "my_paintings.yaml").write_text(yaml.safe_dump({**entry, "path": str(tmp_path / "p")}))
    loaded = load_params(path)
    assert parse_sources(loaded)["my_paintings"].options["path"] == str(tmp_path / "p")
    # the catalogue is data, not knobs: the repository's params.yaml holds none of it
    from pipelines.sources import CATALOGUE

    repository = load_params(REPO / "params.yaml")
    assert "sources" not in yaml.safe_load((REPO / "params.yaml").read_text())
    assert set(repository["sources"]) == {p.stem for p in (REPO / CATALOGUE).glob("*.yaml")} >= {"demo_photos", "coco"}

    path.write_text(yaml.safe_dump({**params, "sources": {"my_paintings": entry}}))  # in both places: which one?
    with pytest.raises(CatalogueError, match="'my_paintings' is defined twice.*keep the catalogue file"):
        load_params(path)
    path.write_text(yaml.safe_dump(params))
    (tmp_path / "catalogue" / "bad name.yaml").write_text(yaml.safe_dump(entry))
    with pytest.raises(CatalogueError, match="bad name.yaml: a source's name"):
        load_params(path)
    (tmp_path / "catalogue" / "bad name.yaml").unlink()
    (tmp_path / "catalogue" / "empty.yaml").write_text("")
    with pytest.raises(CatalogueError, match="empty.yaml: must map the source's settings"):
        load_params(path)

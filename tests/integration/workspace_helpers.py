"""Demo workspaces for the stage tests: params.yaml and shards built by the real stages."""

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def demo_workspace(root: Path, *, photos: dict, artworks: dict, sources=("demo_photos", "demo_artworks"),
                   splits=("train", "val"), edit=None) -> dict:
    """A folder with the repository's params.yaml (demo counts ``photos``/``artworks`` per split, MLflow on
    SQLite inside it, then ``edit(params)``) and the shards the real download and shard stages build."""
    from pipelines import download, shard

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["sources"]["demo_photos"]["count"] = photos
    params["sources"]["demo_artworks"]["count"] = artworks
    params["mlflow"]["tracking_uri"] = f"sqlite:///{root / 'mlflow.db'}"
    if edit is not None:
        edit(params)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    for source in sources:
        download.run(source, root / "params.yaml", root / "raw", progress=False)
        for split in splits:
            shard.run(source, split, root / "params.yaml", root / "raw", root / "shards", progress=False)
    return params

"""Demo workspaces for the stage tests: params.yaml and shards built by the real stages."""

from pathlib import Path

import yaml

from pipelines.sources import load_params

REPO = Path(__file__).resolve().parents[2]


def demo_workspace(root: Path, *, photos: dict, artworks: dict, sources=("demo_photos", "demo_artworks"),
                   splits=("train", "val"), edit=None) -> dict:
    """A folder with the repository's params.yaml (demo counts ``photos``/``artworks`` per split, MLflow on
    SQLite inside it, then ``edit(params)``) and the shards the real download and shard stages build."""
    from pipelines import download, shard

    params = load_params(REPO / "params.yaml")
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


def write_params(root: Path, params: dict) -> None:
    """``params`` as the repository lays them out: params.yaml without its sources, and each source in
    ``catalogue/<source>.yaml`` (dvc.yaml's download and shard stages depend on those files)."""
    params = dict(params)
    (root / "catalogue").mkdir(parents=True, exist_ok=True)
    for name, entry in params.pop("sources").items():
        (root / "catalogue" / f"{name}.yaml").write_text(yaml.safe_dump(entry))
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def small_demo_params(**changes) -> dict:
    """The repository's params.yaml with the demo pipeline made small enough for a test: every stage runs, on few
    images and steps (``changes`` go to ``train.profiles.demo``)."""
    params = load_params(REPO / "params.yaml")
    # val: 5 photos and 2+ artworks of each family in the held-out test half, 3 photos and 1+ in the validation half
    params["sources"]["demo_photos"]["count"] = {"train": 16, "val": 8}
    params["sources"]["demo_artworks"]["count"] = {"train": 15, "val": 20}
    params["train"]["profiles"]["demo"].update(steps=4, report_every=2, sample_every=2, crop_size=32, load_size=40)
    params["evaluate"]["protocols"]["demo"].update(contents=3, styles_per_label=1, size=32)
    # one small sweep: a sane and a wrecking learning rate, two reports each
    params["sweep"].update(samples=1, validation={"contents": 2, "styles_per_label": 1, "size": 32, "seed": 0,
                                                  "batch_size": 16},
                           combinations={"adain-balanced_gram": {"lr": {"grid": [1e-4, 1.0]}}},
                           run_in={"demo": ["adain-balanced_gram"], "full": ["adain-balanced_gram"]})
    params["sweep"]["profiles"]["demo"] = {"steps": 4, "report_every": 2}
    # a Train worker group per trial (Tune hears it through TuneReportCallback); the sweep stage's own test
    # interrupts and restores the default, trials that train in their Tune actors (local mode)
    params["sweep"]["workers"] = 1
    params["stylize"].update(contents=3, size=32, style_size=32)
    # the deception rate's judge: one work per synthetic painter here, so any artist with a work counts
    params["classifier"].update(min_works=1, report_every=2)
    params["classifier"]["ray"]["workers"] = 1
    params["classifier"]["profiles"]["demo"].update(steps=4, batch_size=4, input_size=32, load_size=40, warmup_steps=1)
    # The DVC wiring is the same for every cell; each model's own training and logged model are tested apart
    # (tests/unit/test_training.py, test_every_model_is_logged_as_a_model_mlflow_serves_at_any_size).
    params["train"]["grid"] = {"models": ["adain", "linear"], "losses": ["gram", "balanced_gram"]}
    # one GAN stage through the pipeline; every GAN model's training is tested apart (tests/unit/test_gan.py)
    params["gan"]["grid"] = ["cyclegan"]
    params["gan"]["profiles"]["demo"].update(steps=4, report_every=2, sample_every=2)
    for key, value in changes.items():
        params["train"]["profiles"]["demo"][key] = value
    return params

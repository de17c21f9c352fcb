"""The artist classifier and the deception rate: checked on constructed cases whose answers are known."""

import json

import pytest
import torch

from stylecore.checkpoint import CheckpointError
from stylecore.classifier import (ArtistClassifier, ClassifierConfig, ClassifierTrainer, LabelledBatch,
                                  accuracy_report, classify, load_classifier)
from stylecore.data import Augment, seeded_generator
from stylecore.heldout import center_square
from stylecore.metrics.deception import DeceptionRate
from stylecore.synthetic import PAINTERS_PER_FAMILY, STYLE_FAMILIES, synthetic_artwork

SIZE = 64


def _artworks(count: int, offset: int) -> tuple[torch.Tensor, list[str], list[str]]:
    images, artists, styles = [], [], []
    for i in range(count):
        family, painter = STYLE_FAMILIES[i % len(STYLE_FAMILIES)], (i // len(STYLE_FAMILIES)) % PAINTERS_PER_FAMILY
        images.append(synthetic_artwork(offset + i, family, 96, painter))
        artists.append(f"{family}-painter-{painter}")
        styles.append(family)
    return torch.stack(images), artists, styles


def _config(**overrides) -> ClassifierConfig:
    values = dict(backbone="resnet18", weights="random:0", input_size=SIZE, load_size=72, batch_size=16, steps=160,
                  lr=1e-3, weight_decay=0.05, warmup_steps=16, label_smoothing=0.0, style_weight=1.0,
                  precision="fp32", seed=0, checkpoint_every=40, keep_checkpoints=2)
    return ClassifierConfig.from_dict({**values, **overrides})


def _batches(images, artists, styles, names, style_names, seed=0):
    augment, generator = Augment(SIZE, 72, flip=True), seeded_generator(seed)
    while True:
        index = torch.randint(len(images), (16,), generator=generator)
        yield LabelledBatch(torch.stack([augment(images[i], generator) for i in index]),
                            torch.tensor([names.index(artists[i]) for i in index]),
                            torch.tensor([style_names.index(styles[i]) for i in index]), [])


@pytest.fixture(scope="module")
def trained():
    """A ResNet-18 from a random init, trained on 150 synthetic artworks of 15 painters, and 60 held-out works."""
    torch.set_num_threads(2)
    images, artists, styles = _artworks(150, 10_000)
    names, style_names = sorted(set(artists)), sorted(set(styles))
    trainer = ClassifierTrainer(_config(), names, style_names)
    batches = _batches(images, artists, styles, names, style_names)
    for _ in range(trainer.config.steps):
        trainer.train_step(next(batches))
    held_images, held_artists, _ = _artworks(60, 90_000)
    return trainer.model.eval(), torch.stack([center_square(x, SIZE) for x in held_images]), held_artists


def test_the_demo_painters_are_learnable_well_above_chance(trained):
    model, images, artists = trained
    report = accuracy_report(model, images, artists)
    assert report["images"] == 60 and report["skipped_unknown_artist"] == 0
    assert report["chance_top1"] == pytest.approx(1 / 15)
    assert report["top1"] >= 3 * report["chance_top1"], report  # 15 artists: chance is 6.7 %
    assert report["top5"] >= report["top1"] and set(report["per_artist"]) <= set(model.artists)
    styles = [artist.split("-")[0] for artist in artists]
    with_styles = accuracy_report(model, images, artists, styles)
    assert with_styles["style_top1"] > with_styles["style_chance_top1"] == pytest.approx(1 / 5), with_styles


def test_deception_of_outputs_that_are_the_styles_is_the_classifier_accuracy_and_of_the_contents_is_near_chance(trained):
    model, images, artists = trained
    scorer = DeceptionRate(model, images, artists)
    contents = torch.stack([center_square(synthetic_artwork(7, "noise", 96), SIZE)] * 2)  # a fixed "photo"-like input
    content_index = torch.tensor([0] * len(images))
    style_index = torch.arange(len(images))
    # outputs copied from the style images: top-1 deception is exactly the held-out accuracy, kNN finds itself
    copied = scorer.score_indexed(images, contents, images, content_index, style_index)
    accuracy = accuracy_report(model, images, artists)
    assert float(copied["deception_top1"].mean()) == pytest.approx(accuracy["top1"])
    assert float(copied["deception_knn"].mean()) == 1.0
    assert float(copied["deception_top5"].mean()) == pytest.approx(accuracy["top5"])
    # outputs equal to one content image for every style: whatever artist it is taken for, it is right only for the
    # styles by that artist, so the rate is that artist's share of the gallery (4 of 60 here: chance)
    same = contents[:1].expand(len(images), -1, -1, -1)
    fooled = scorer.score_indexed(same, contents, images, content_index, style_index)
    predicted = model.artists[int(classify(model, contents[:1])["artist"].argmax())]
    assert float(fooled["deception_top1"].mean()) == pytest.approx(artists.count(predicted) / len(artists))
    assert float(fooled["deception_top1"].mean()) <= 0.1 and float(fooled["deception_knn"].mean()) <= 0.1


def test_unknown_artists_are_left_out_of_top1_but_not_of_knn(trained):
    model, images, artists = trained
    renamed = ["stranger" if i < 10 else a for i, a in enumerate(artists)]
    scorer = DeceptionRate(model, images, renamed)
    values = scorer.score_indexed(images, images[:1], images, torch.zeros(60, dtype=torch.long), torch.arange(60))
    assert values["deception_top1"][:10].isnan().all() and values["deception_top1"][10:].isfinite().all()
    assert values["deception_knn"].isfinite().all()
    with pytest.raises(ValueError, match="not in the gallery"):
        scorer.encode_references(images[:1], torch.rand(2, 3, SIZE, SIZE))
    with pytest.raises(ValueError, match="artist label"):
        DeceptionRate(model, images[:2], ["a", ""])


def test_a_checkpoint_resumes_exactly_and_loads_for_inference(tmp_path):
    images, artists, styles = _artworks(30, 0)
    names, style_names = sorted(set(artists)), sorted(set(styles))
    config = _config(steps=6, checkpoint_every=3, warmup_steps=2, input_size=32, load_size=40)

    def batches(start):
        augment, generator = Augment(32, 40, flip=True), seeded_generator("resume", start)
        while True:
            index = torch.randint(len(images), (4,), generator=generator)
            yield LabelledBatch(torch.stack([augment(images[i], generator) for i in index]),
                                torch.tensor([names.index(artists[i]) for i in index]),
                                torch.tensor([style_names.index(styles[i]) for i in index]), [])

    straight = ClassifierTrainer(config, names, style_names)
    stream = batches(0)
    for step in range(6):
        straight.train_step(next(stream))
    interrupted = ClassifierTrainer(config, names, style_names)
    stream = batches(0)
    for _ in range(3):
        interrupted.train_step(next(stream))
    path = interrupted.save_checkpoint(tmp_path)
    resumed = ClassifierTrainer(config, names, style_names)
    resumed.load_checkpoint(path)
    assert resumed.step == 3
    replay = batches(0)
    for _ in range(3):
        next(replay)  # the same batches 4–6 the straight run saw
    for _ in range(3):
        resumed.train_step(next(replay))
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    loaded = load_classifier(tmp_path)  # the folder of step-* directories: the newest
    assert loaded.artists == names and not loaded.training
    probe = images[:3]
    assert torch.allclose(loaded(probe)["artist"], interrupted.model.eval()(probe)["artist"], atol=1e-5)
    config_file = json.loads((path / "config.json").read_text())
    assert config_file["backbone_weights"]["kind"] == "random" and config_file["step"] == 3
    other = ClassifierTrainer(config, names[:-1], style_names)
    with pytest.raises(CheckpointError, match="other artists"):
        other.load_checkpoint(path)
    with pytest.raises(CheckpointError, match="not a classifier checkpoint"):
        load_classifier(tmp_path / "nothing")


def test_pretrained_trunk_weights_load_and_the_head_is_replaced(tmp_path):
    import torchvision.models as tvm
    from safetensors.torch import save_file

    torch.manual_seed(5)
    reference = tvm.resnet18(weights=None)
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(tmp_path / "resnet18.safetensors"))
    model = ArtistClassifier(["a", "b", "c"], backbone="resnet18", weights=str(tmp_path / "resnet18.safetensors"))
    assert torch.equal(model.trunk.conv1.weight, reference.conv1.weight)
    assert model.artist_head.out_features == 3 and model.weights["kind"] == "file"
    assert model.embed(torch.rand(2, 3, 50, 70)).shape == (2, 512)


@pytest.mark.parametrize("change, message", [
    ({"backbone": "alexnet"}, "backbone"), ({"load_size": 32}, "below input_size"), ({"lr": 0}, "lr"),
    ({"precision": "fp16"}, "precision"), ({"epochs": 3}, "unknown setting"), ({"steps": 0}, "steps")])
def test_bad_classifier_settings_are_named(change, message):
    with pytest.raises(ValueError, match=message):
        _config(**change)


def test_the_synthetic_painters_of_a_family_differ_in_lightness_only_by_their_band():
    dark, light = synthetic_artwork(3, "stripes", 64, 0), synthetic_artwork(3, "stripes", 64, 2)
    assert float(dark.mean()) < 1 / 3 + 0.05 < 2 / 3 - 0.05 < float(light.mean())
    assert torch.equal(synthetic_artwork(3, "stripes", 64), synthetic_artwork(3, "stripes", 64))  # no painter: as before

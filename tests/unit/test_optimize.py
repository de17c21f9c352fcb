"""Optimisation-based stylization (stylecore.optimize): Gatys and STROTSS, on real photos and textures
(scikit-image's bundled public-domain samples), with seeded random VGG weights (no download here)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stylecore import functional as SF
from stylecore import optimize
from stylecore.metrics.paper import ssim
from stylecore.optimize import OptimizeMemoryError, pyramid
from stylecore.optimize.strotss import regions_from_masks

SAMPLES = Path(importlib.util.find_spec("skimage").origin).parent / "data"
OFFLINE = {"encoder_weights": "random:0", "device": "cpu", "precision": "fp32"}
# small STROTSS runs: fewer sampled points than the reference's 1024 / 5000, the same schedule otherwise
SMALL_STROTSS = {**OFFLINE, "n_samples": 256, "style_samples": 1024}


def photo(name: str, side: int) -> torch.Tensor:
    image = Image.open(SAMPLES / name).convert("RGB")
    image.thumbnail((side, side), Image.LANCZOS)
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]


@pytest.fixture(scope="module")
def pair():
    return photo("astronaut.png", 96), photo("rocket.jpg", 96)


def test_the_laplacian_pyramid_reconstructs_the_image_exactly():
    image = torch.rand(2, 3, 37, 53)
    for levels in (0, 1, 5, 8):  # 8 levels of a 37-px image reach 1×1 and stay there
        bands = pyramid.decompose(image, levels)
        assert len(bands) == levels + 1
        torch.testing.assert_close(pyramid.synthesize(bands), image, rtol=0, atol=1e-6)
    # the bands are band-pass: all but the coarsest have (nearly) zero mean on a smooth image
    smooth = torch.linspace(0, 1, 64).view(1, 1, 1, 64).expand(1, 3, 64, 64)
    assert all(band.mean().abs() < 1e-3 for band in pyramid.decompose(smooth, 3)[:-1])


@pytest.mark.parametrize("style_loss", ["gram", "balanced_gram", "mean_std"])
def test_gatys_lowers_its_objective_from_the_content_and_its_content_weight_keeps_the_structure(pair, style_loss):
    """From the content, the style term falls by half or more; a larger content weight keeps more of the content's
    structure (SSIM), as it must: with random VGG weights the terms' balance is arbitrary, so it is compared."""
    content, style = pair
    resized = torch.nn.functional.interpolate(content, size=(64, 64), mode="bilinear", antialias=True)
    similarity = {}
    for content_weight in (1.0, 1e4):
        result = optimize.build("gatys", size=64, steps=40, style_loss=style_loss, content_weight=content_weight,
                                **OFFLINE).run(content, style)
        (record,) = result.scales
        assert record.first["content"] == 0.0  # it starts from the content itself
        # it falls; by half or more where the content term does not hold it near the start
        assert record.last["total"] < (0.5 if content_weight == 1.0 else 0.9) * record.first["total"], record
        out = result.image
        assert out.shape == (1, 3, 64, 64) and 0 <= out.min() and out.max() <= 1
        assert not torch.allclose(out, resized, atol=0.02)  # it did stylize
        similarity[content_weight] = float(ssim(out, resized))
        if content_weight == 1.0:
            assert record.last["style"] < 0.5 * record.first["style"], record
    assert similarity[1e4] > similarity[1.0] + 0.05 and similarity[1e4] > 0.25, similarity


def test_gatys_takes_images_of_any_memory_layout_at_their_own_size():
    """A decoded (H, W, C) array permuted to (C, H, W) keeps its strides; at its own size nothing resizes it."""
    content = torch.rand(1, 32, 32, 3).permute(0, 3, 1, 2)
    result = optimize.build("gatys", size=32, steps=2, **OFFLINE).run(content, torch.rand(1, 3, 32, 32))
    assert result.image.shape == (1, 3, 32, 32)


def test_gatys_coarse_to_fine_from_noise_and_colour_preservation(pair):
    content, style = pair
    result = optimize.build("gatys", size=64, steps=10, scales=2, init="noise", optimizer="adam",
                            preserve_color="luminance", **OFFLINE).run(content, style)
    assert [record.size for record in result.scales] == [(32, 32), (64, 64)]
    resized = torch.nn.functional.interpolate(content, size=(64, 64), mode="bilinear", antialias=True)
    # luminance mode: the output's chroma is the content's (BT.601 U and V), only its luminance is stylized; pixels
    # whose new luminance with the old chroma falls outside RGB's gamut are clipped, and left out of the check
    inside = ((result.image > 1e-3) & (result.image < 1 - 1e-3)).all(dim=1)
    assert inside.float().mean() > 0.8
    chroma = lambda image: SF.rgb_to_yuv(image)[:, 1:].permute(1, 0, 2, 3)[:, inside]  # noqa: E731
    torch.testing.assert_close(chroma(result.image), chroma(resized), atol=0.01, rtol=0)
    assert (SF.rgb_to_yuv(result.image)[:, 0] - SF.rgb_to_yuv(resized)[:, 0]).abs().mean() > 0.02


def test_strotss_follows_the_references_schedule_and_lowers_its_objective(pair):
    content, style = pair
    method = optimize.build("strotss", size=96, steps=25, smallest=48, **SMALL_STROTSS)
    assert method.long_sides() == [48, 96]
    result = method.run(content, style)
    assert [r.size for r in result.scales] == [(48, 48), (96, 96)]
    assert result.settings["content_weight"] == 1.0 and result.extra["scales_long_side"] == [48, 96]
    first_scale, last_scale = result.scales
    assert first_scale.last["total"] < 0.6 * first_scale.first["total"], first_scale
    assert last_scale.last["total"] < last_scale.first["total"], last_scale
    assert result.image.shape == (1, 3, 96, 96) and 0 <= result.image.min() and result.image.max() <= 1


def test_strotss_is_deterministic_given_a_seed(pair):
    content, style = pair
    run = lambda seed: optimize.build("strotss", size=32, steps=4, smallest=32, seed=seed,  # noqa: E731
                                      **SMALL_STROTSS).run(content, style).image
    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))


def test_guidance_styles_each_region_from_its_own_style_region():
    """A flat grey content; a style with a red top and a blue bottom. Guided (content left ↔ style top, right ↔
    bottom), the left half turns redder than the right; unguided, the halves stay alike."""
    generator = torch.Generator().manual_seed(0)
    content = 0.5 + 0.1 * (torch.rand(1, 3, 64, 64, generator=generator) - 0.5)
    style = torch.rand(1, 3, 64, 64, generator=generator) * 0.2
    style[:, 0, :32] += 0.75  # red top
    style[:, 2, 32:] += 0.75  # blue bottom
    content_mask, style_mask = torch.zeros(3, 64, 64), torch.zeros(3, 64, 64)
    content_mask[0, :, :32], content_mask[2, :, 32:] = 1, 1
    style_mask[0, :32], style_mask[2, 32:] = 1, 1
    method = optimize.build("strotss", size=64, steps=40, smallest=64, **SMALL_STROTSS)

    def red_left_of_right(image):
        left, right = image[..., :32].mean(dim=(2, 3))[0], image[..., 32:].mean(dim=(2, 3))[0]
        return float((left[0] - left[2]) - (right[0] - right[2]))

    guided = method.run(content, style, content_mask=content_mask, style_mask=style_mask)
    assert sorted(guided.extra["regions"]) == [[0, 0, 255], [255, 0, 0]]
    plain = method.run(content, style)
    assert red_left_of_right(guided.image) > 0.08 and abs(red_left_of_right(plain.image)) < 0.04, (
        red_left_of_right(guided.image), red_left_of_right(plain.image))


def test_masks_pair_regions_by_their_nearest_colour_and_bad_masks_are_named():
    style_mask = torch.zeros(3, 40, 40)
    style_mask[0, :20] = 1.0  # red top, black bottom
    content_mask = torch.zeros(3, 30, 30)
    content_mask[0, :, :10] = 0.97  # JPEG-like noise: still the red region
    content_mask[:, 0, 0] = 0.2  # one stray dark grey pixel in the red area joins its nearest colour, black
    regions = regions_from_masks(content_mask, style_mask)
    by_colour = {region.colour: region for region in regions}
    assert set(by_colour) == {(255, 0, 0), (0, 0, 0)}
    assert int(by_colour[(255, 0, 0)].content.sum()) == 300 - 1 and int(by_colour[(255, 0, 0)].style.sum()) == 800
    green = style_mask.clone()
    green[1, 30:] = 1.0  # a green region the content never uses
    with pytest.raises(ValueError, match=r"\(0, 255, 0\) appears nowhere in the content mask"):
        regions_from_masks(content_mask, green)
    with pytest.raises(ValueError, match="RGB image"):
        regions_from_masks(content_mask[:1], style_mask)


def test_an_output_too_large_for_memory_is_refused_before_any_compute(pair):
    content, style = pair
    method = optimize.build("strotss", size=200_000, **OFFLINE)
    with pytest.raises(OptimizeMemoryError, match=r"200000x200000 needs about .* GiB.*lower the size .*fits"):
        method.run(content, style)


def test_bad_settings_name_the_setting_and_the_choices():
    with pytest.raises(ValueError, match="init='white' is not one of content, noise, style_mean"):
        optimize.build("gatys", init="white", **OFFLINE)
    with pytest.raises(ValueError, match="unknown loss 'gramm'.*Did you mean 'gram'"):
        optimize.build("gatys", style_loss="gramm", **OFFLINE)
    with pytest.raises(ValueError, match="style_params|gram_normalise"):
        optimize.build("gatys", style_params={"gram_normalise": "hw"}, **OFFLINE)
    with pytest.raises(ValueError, match="got unknown parameter.*style_loss.*accepts"):
        optimize.build("strotss", style_loss="gram", **OFFLINE)
    with pytest.raises(ValueError, match="spatial guidance is strotss's"):
        optimize.build("gatys", **OFFLINE).run(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8),
                                               content_mask=torch.rand(3, 8, 8))


def test_the_command_writes_the_image_and_its_settings_and_losses(tmp_path, pair):
    content, style = pair
    for name, image in (("content.png", content), ("style.jpg", style)):
        Image.fromarray((image[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(tmp_path / name)
    command = [sys.executable, "-m", "stylecore.cli", "optimize", "--method", "gatys", "--content",
               str(tmp_path / "content.png"), "--style", str(tmp_path / "style.jpg"), "--size", "48", "--steps", "3",
               "--weights", "random:0", "--output", str(tmp_path / "out.png"), "--quiet"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "weights random:0 (pretrained: false)" in done.stdout and "scale 1: 48x48, 3 steps" in done.stdout
    assert Image.open(tmp_path / "out.png").size == (48, 48)
    record = json.loads((tmp_path / "out.json").read_text())
    assert record["method"] == "gatys" and record["settings"]["steps"] == 3 and record["encoder"]["pretrained"] == "false"
    assert len(record["scales"]) == 1 and set(record["scales"][0]["last"]) == {"total", "content", "style"}
    assert len(record["inputs"]["content"]["sha256"]) == 64
    refused = subprocess.run(command[:-3] + ["--content-mask", str(tmp_path / "content.png"), "--output",
                                             str(tmp_path / "x.png")], capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "strotss's" in refused.stderr and not (tmp_path / "x.png").exists()

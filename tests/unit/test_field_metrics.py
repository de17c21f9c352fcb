"""The field's evaluation metrics against their published formulas and reference implementations.

FID's Fréchet distance against closed forms and pytorch-fid's ``calculate_frechet_distance``; the FID
Inception against pytorch-fid's network with the same (random) weights; LPIPS against the ``lpips``
package with the same backbone and the published heads; CFSD and the colour histogram against their
definitions written out naively; the bootstrap's verdicts on constructed cases.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stylecore.backbones import EncoderWeightsUnavailable, Release, fetch_release, hub_checkpoint_path
from stylecore.metrics.cfsd import CFSD
from stylecore.metrics.field import EvaluationMetrics, FieldMetrics, set_scores
from stylecore.metrics.frechet import (feature_statistics, fid_infinity, frechet_distance,
                                       frechet_distance_of_features, rank_deficiency_note)
from stylecore.metrics.histogram import hellinger, rgb_uv_histogram
from stylecore.metrics.inception import InceptionFeatures
from stylecore.metrics.lpips import LPIPS
from stylecore.metrics.statistics import compare


def _randomised_state(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Every tensor of ``module``'s state drawn at random (batch-norm statistics too, so they matter)."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in module.state_dict().items():
        if not value.is_floating_point():
            state[key] = value.clone()
        elif key.endswith("running_var"):
            state[key] = torch.rand(value.shape, generator=generator) + 0.5
        else:
            state[key] = torch.randn(value.shape, generator=generator) * (0.1 if value.dim() > 1 else 0.05)
    return state


# -- Fréchet distance -------------------------------------------------------------------------------

def test_frechet_distance_matches_the_closed_form_of_diagonal_gaussians():
    # N(μ₁, diag a) vs N(μ₂, diag b): d² = ‖μ₁ − μ₂‖² + Σ (√a_i − √b_i)²
    a, b = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([4.0, 1.0, 9.0])
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    stats = lambda mu, var: type(feature_statistics(torch.zeros(2, 3)))(mu, torch.diag(var), 100)  # noqa: E731
    expected = float((mu1 - mu2).square().sum() + (a.sqrt() - b.sqrt()).square().sum())
    assert frechet_distance(stats(mu1, a), stats(mu2, b)) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_agrees_with_pytorch_fid_on_full_rank_statistics():
    from pytorch_fid.fid_score import calculate_frechet_distance

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(300, 24, generator=generator) @ torch.randn(24, 24, generator=generator)
    y = torch.randn(260, 24, generator=generator) * 1.5 + 0.3
    sx, sy = feature_statistics(x), feature_statistics(y)
    reference = calculate_frechet_distance(sx.mean.numpy(), sx.covariance.numpy(), sy.mean.numpy(), sy.covariance.numpy())
    assert frechet_distance(sx, sy) == pytest.approx(reference, rel=1e-6)
    assert frechet_distance_of_features(x, y) == pytest.approx(reference, rel=1e-6)


def test_the_sample_route_equals_the_matrix_route_below_the_feature_dimension():
    # fewer images than dimensions (the rank-deficient case of every small evaluation): both routes, one value
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(20, 64, generator=generator), torch.randn(30, 64, generator=generator) + 0.2
    sample_route = frechet_distance_of_features(x, y)
    matrix_route = frechet_distance(feature_statistics(x), feature_statistics(y))
    assert sample_route == pytest.approx(matrix_route, rel=1e-6)
    assert rank_deficiency_note(20, 64) and rank_deficiency_note(3000, 2048) is None


def test_frechet_distance_of_a_set_with_itself_is_zero_and_a_shift_costs_its_squared_length():
    x = torch.randn(50, 16, generator=torch.Generator().manual_seed(2))
    shift = torch.linspace(-1, 1, 16)
    assert frechet_distance_of_features(x, x) == pytest.approx(0, abs=1e-8)
    assert frechet_distance_of_features(x, x + shift) == pytest.approx(float(shift.square().sum()), rel=1e-6)


def test_fid_infinity_is_refused_below_5000_images_and_removes_the_small_sample_bias_above():
    generator = torch.Generator().manual_seed(3)
    small = torch.randn(800, 8, generator=generator)
    with pytest.raises(ValueError, match=r"at least 5,000 images.*got 800.*plain FID"):
        fid_infinity(small, small.flip(0))
    # two samples of one distribution: FID_N ≈ c / N > 0, FID∞ extrapolates towards the true 0
    x, y = torch.randn(8000, 8, generator=generator), torch.randn(8000, 8, generator=generator)
    biased = frechet_distance_of_features(x[:5000], y[:5000])
    assert abs(fid_infinity(x, y)) < biased


# -- Inception ---------------------------------------------------------------------------------------

def test_the_tensorflow_variant_matches_pytorch_fids_inception_with_the_same_weights(tmp_path):
    from pytorch_fid import inception as reference_module

    # pytorch-fid's FID network (its blocks, as its fid_inception_v3 assembles them), with random weights in
    # place of the download, and its InceptionV3.forward's input handling (resize to 299, then [-1, 1])
    fid_net = reference_module._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    fid_net.Mixed_5b, fid_net.Mixed_5c = reference_module.FIDInceptionA(192, 32), reference_module.FIDInceptionA(256, 64)
    fid_net.Mixed_5d = reference_module.FIDInceptionA(288, 64)
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
        setattr(fid_net, name, reference_module.FIDInceptionC(768, c7))
    fid_net.Mixed_7b, fid_net.Mixed_7c = reference_module.FIDInceptionE_1(1280), reference_module.FIDInceptionE_2(2048)
    state = _randomised_state(fid_net, 0)
    fid_net.load_state_dict(state)
    blocks = torch.nn.Sequential(*[
        torch.nn.Sequential(fid_net.Conv2d_1a_3x3, fid_net.Conv2d_2a_3x3, fid_net.Conv2d_2b_3x3,
                            torch.nn.MaxPool2d(3, 2)),
        torch.nn.Sequential(fid_net.Conv2d_3b_1x1, fid_net.Conv2d_4a_3x3, torch.nn.MaxPool2d(3, 2)),
        torch.nn.Sequential(fid_net.Mixed_5b, fid_net.Mixed_5c, fid_net.Mixed_5d, fid_net.Mixed_6a, fid_net.Mixed_6b,
                            fid_net.Mixed_6c, fid_net.Mixed_6d, fid_net.Mixed_6e),
        torch.nn.Sequential(fid_net.Mixed_7a, fid_net.Mixed_7b, fid_net.Mixed_7c, torch.nn.AdaptiveAvgPool2d(1)),
    ]).eval()

    def reference(images):
        resized = torch.nn.functional.interpolate(images, size=(299, 299), mode="bilinear", align_corners=False)
        return blocks(2 * resized - 1).flatten(1)

    path = tmp_path / "fid_inception.pth"
    torch.save(state, path)
    ours = InceptionFeatures(str(path), resize=299, input_range="symmetric", variant="tensorflow")
    images = torch.rand(2, 3, 120, 90, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(images)
    assert torch.allclose(ours(images), expected, rtol=1e-4, atol=1e-5)
    # the torchvision variant is a different network: the same weights give other features
    plain = InceptionFeatures(str(path), resize=299, input_range="symmetric", variant="torchvision")
    assert not torch.allclose(plain(images), expected, rtol=1e-3, atol=1e-4)


def test_inception_refuses_images_too_small_for_it_and_names_the_setting():
    net = InceptionFeatures("random:0")
    with pytest.raises(ValueError, match="fid_resize"):
        net(torch.rand(1, 3, 64, 64))
    assert net(torch.rand(2, 3, 80, 80)).shape == (2, 2048)
    assert net.describe()["pretrained"] == "false"


def test_a_release_whose_digest_differs_from_the_published_one_is_refused_and_removed(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    release = Release("pytorch_fid", "http://127.0.0.1:9/pt_inception-2015-12-05-6726825d.pth", sha256="6726825d")
    path = hub_checkpoint_path(release.filename)
    path.parent.mkdir(parents=True)
    torch.save({"x": torch.zeros(1)}, path)  # a file under the right name, but not the published one
    with pytest.raises(EncoderWeightsUnavailable, match="publishes 6726825d"):
        fetch_release(release, "a test")
    assert not path.exists()
    with pytest.raises(EncoderWeightsUnavailable, match="could not be downloaded"):  # nothing listens on port 9
        fetch_release(release, "a test")


# -- LPIPS -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_matches_the_lpips_package_with_the_same_backbone_and_published_heads(net, tmp_path):
    import lpips

    reference = lpips.LPIPS(net=net, pnet_rand=True, verbose=False).eval()
    generator = torch.Generator().manual_seed(0)
    backbone = {}
    for slice_ in (reference.net.slice1, reference.net.slice2, reference.net.slice3, reference.net.slice4,
                   reference.net.slice5):
        for name, module in slice_.named_children():
            if isinstance(module, torch.nn.Conv2d):  # random, but not torchvision's init: any weights must agree
                backbone[f"features.{name}.weight"] = torch.randn(module.weight.shape, generator=generator) * 0.05
                backbone[f"features.{name}.bias"] = torch.randn(module.bias.shape, generator=generator) * 0.05
                module.weight.data.copy_(backbone[f"features.{name}.weight"])
                module.bias.data.copy_(backbone[f"features.{name}.bias"])
    path = tmp_path / f"{net}.pth"
    torch.save(backbone, path)
    ours = LPIPS(net, weights=str(path))
    x, y = torch.rand(3, 3, 64, 64, generator=generator), torch.rand(3, 3, 64, 64, generator=generator)
    with torch.no_grad():
        expected = reference(2 * x - 1, 2 * y - 1).flatten()
    assert torch.allclose(ours(x, y), expected, rtol=1e-4, atol=1e-6)
    assert torch.allclose(ours(x, x), torch.zeros(3), atol=1e-7)
    assert all(float(head.min()) >= 0 for head in ours.heads)  # the published heads are non-negative


def test_lpips_gray_ignores_colour_that_keeps_luma():
    net = LPIPS("alex", weights="random:0")
    image = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(4))
    luma = (image * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    gray = luma.expand(-1, 3, -1, -1)
    assert float(net(image, gray, gray=True)) == pytest.approx(0, abs=1e-7)
    assert float(net(image, gray)) > 0


# -- CFSD ---------------------------------------------------------------------------------------------

def test_cfsd_is_the_summed_row_kl_of_the_self_similarity_maps():
    metric = CFSD("random:0", block_elements=2 * 64 * 5)  # blocks of 5 rows: they do not divide the 64 rows
    generator = torch.Generator().manual_seed(5)
    output, content = torch.rand(2, 3, 32, 32, generator=generator), torch.rand(2, 3, 32, 32, generator=generator)
    features = lambda x: metric.encoder(x, ["relu3_1"])["relu3_1"]  # noqa: E731
    expected = []
    for o, c in zip(features(output), features(content)):
        channels = o.shape[0]
        fo, fc = (o.flatten(1).T / channels).double(), (c.flatten(1).T / channels).double()
        total = 0.0
        for i in range(fo.shape[0]):  # one position at a time, as the definition reads
            p, q = torch.softmax(fc[i] @ fc.T, 0), torch.softmax(fo[i] @ fo.T, 0)
            total += float((p * (p / q).log()).sum())
        expected.append(total)
    value = metric(output, content)
    assert torch.allclose(value.double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-5, atol=1e-12)
    assert float(metric(content, content).abs().max()) < 1e-12 and bool((value >= 0).all())


# -- colour histogram ----------------------------------------------------------------------------------

def test_the_histogram_follows_histogans_rgb_uv_definition():
    image = torch.rand(1, 3, 3, 4, generator=torch.Generator().manual_seed(6))
    centres = np.linspace(-3, 3, 64)
    expected = np.zeros((3, 64, 64))
    eps = 1e-6
    for pixel in image[0].flatten(1).T.double().numpy():  # one pixel at a time
        weight = math.sqrt((pixel ** 2).sum() + eps)
        for channel, (a, b) in enumerate(((1, 2), (0, 2), (0, 1))):
            u = math.log(pixel[channel] + eps) - math.log(pixel[a] + eps)
            v = math.log(pixel[channel] + eps) - math.log(pixel[b] + eps)
            k_u = 1 / (1 + ((u - centres) / 0.02) ** 2)
            k_v = 1 / (1 + ((v - centres) / 0.02) ** 2)
            expected[channel] += weight * np.outer(k_u, k_v)
    expected /= expected.sum() + eps
    assert np.allclose(rgb_uv_histogram(image)[0].double().numpy(), expected, rtol=1e-4, atol=1e-9)


def test_hellinger_distance_is_zero_for_one_colour_and_grows_with_a_colour_change():
    generator = torch.Generator().manual_seed(7)
    warm = torch.rand(1, 3, 32, 32, generator=generator) * torch.tensor([1.0, 0.6, 0.3]).view(1, 3, 1, 1)
    cool = warm.flip(1)
    p, q = rgb_uv_histogram(warm), rgb_uv_histogram(cool)
    assert float(p.sum()) == pytest.approx(1, abs=1e-5)
    assert float(hellinger(p, p)) == pytest.approx(0, abs=1e-6)
    slightly = rgb_uv_histogram((warm * 0.97 + 0.03 * cool))
    assert 0 < float(hellinger(p, slightly)) < float(hellinger(p, q)) <= 1


# -- a candidate's set scores, and the bootstrap ----------------------------------------------------------

def test_artfid_combines_mean_lpips_and_fid_as_published():
    generator = torch.Generator().manual_seed(8)
    outputs, styles = torch.randn(40, 16, generator=generator), torch.randn(40, 16, generator=generator) + 0.5
    lpips_values = torch.rand(40, generator=generator)
    scores = set_scores(lpips_values, outputs, styles)
    assert scores["fid"] == pytest.approx(frechet_distance_of_features(outputs, styles))
    assert scores["artfid"] == pytest.approx((1 + float(lpips_values.mean())) * (1 + scores["fid"]))


def test_a_paired_bootstrap_claims_a_change_only_when_its_interval_excludes_zero():
    generator = torch.Generator().manual_seed(9)
    before = torch.rand(60, generator=generator) + 1
    lowered = compare(before, before - 0.2)
    assert lowered.verdict == "lower" and lowered.low == pytest.approx(-0.2) and lowered.high == pytest.approx(-0.2)
    assert lowered.relative == pytest.approx(-0.2 / float(before.mean()))
    noise = compare(before, before + torch.randn(60, generator=generator) * 0.3, seed=1)
    assert noise.low < noise.difference < noise.high
    assert (noise.verdict == "no difference") == (noise.low <= 0 <= noise.high)
    # "lowered? yes" at −0.0 % is what this replaces: a consistent but negligible change is no difference
    negligible = compare(before, before * 0.999, min_effect=0.01)
    assert negligible.high < 0 and negligible.verdict == "no difference"
    assert compare(before, before * 0.999).verdict == "lower"  # without a minimum effect it would be claimed
    assert compare(before, before * 0.98, min_effect=0.01).verdict == "lower"


def test_a_batched_statistic_gives_the_intervals_of_one_call_per_resample():
    import numpy as np

    from stylecore.metrics.paper import spread_ratios
    from stylecore.metrics.statistics import batched

    generator = torch.Generator().manual_seed(12)
    before = torch.rand(40, generator=generator) + 0.5
    after = before * (torch.rand(40, generator=generator) + 0.6)
    one_at_a_time = {  # plain statistics, one Python call per resample, from numpy's formulas
        "mean": lambda values, idx: float(np.mean(values.double().numpy()[idx.numpy()])),
        "spread": lambda values, idx: float(np.percentile(values.double().numpy()[idx.numpy()], 90)
                                            / np.percentile(values.double().numpy()[idx.numpy()], 10)),
    }
    all_at_once = {"mean": None, "spread": batched(lambda values, idx: spread_ratios(values[idx]))}
    for name, plain in one_at_a_time.items():
        slow = compare(before, after, plain, resamples=300, seed=4)
        fast = compare(before, after, all_at_once[name], resamples=300, seed=4) if all_at_once[name] else \
            compare(before, after, resamples=300, seed=4)  # the default statistic: the mean, batched
        for field_name in ("before", "after", "low", "high", "relative_low", "relative_high"):
            assert getattr(fast, field_name) == pytest.approx(getattr(slow, field_name), rel=1e-12), (name, field_name)
    with pytest.raises(ValueError, match="positive"):
        compare(before - 10, after, all_at_once["spread"], resamples=10)


def test_fid_and_artfid_intervals_come_from_one_resampling_and_equal_separate_ones():
    from stylecore.metrics.field import pack_set_inputs, set_statistics
    from stylecore.metrics.statistics import compare_many

    generator = torch.Generator().manual_seed(11)
    styles = torch.randn(30, 8, generator=generator)
    before = pack_set_inputs(torch.rand(30, generator=generator), torch.randn(30, 8, generator=generator), styles)
    after = pack_set_inputs(torch.rand(30, generator=generator), torch.randn(30, 8, generator=generator) + 1, styles)
    together = compare_many(before, after, set_statistics(), resamples=50, seed=3)
    for metric in ("fid", "artfid"):
        alone = compare(before, after, lambda packed, idx: set_statistics()(packed, idx)[metric], resamples=50, seed=3)
        assert together[metric] == alone
    assert together["fid"].verdict == "higher"  # the outputs moved away from the styles by a whole unit


def test_evaluation_metrics_add_the_fields_scores_to_the_papers_per_pair():
    from stylecore.metrics import StylizationMetrics

    field = FieldMetrics(inception_weights="random:0", lpips_weights="random:0", cfsd_weights="random:0", fid_resize=80)
    metrics = EvaluationMetrics(StylizationMetrics("random:0"), field)
    generator = torch.Generator().manual_seed(10)
    contents, styles = torch.rand(2, 3, 32, 32, generator=generator), torch.rand(2, 3, 32, 32, generator=generator)
    content_index, style_index = torch.tensor([0, 1, 0]), torch.tensor([0, 0, 1])
    outputs = contents[content_index]  # outputs equal to their contents: no content distance at all
    values = metrics.score_indexed(outputs, contents, styles, content_index, style_index)
    assert {"content", "style_classic", "ssim", "lpips", "cfsd", "histogram", "inception"} <= set(values)
    assert torch.allclose(values["lpips"], torch.zeros(3), atol=1e-6)
    assert float(values["cfsd"].abs().max()) < 1e-9 and values["inception"].shape == (3, 2048)
    assert not field.calibrated

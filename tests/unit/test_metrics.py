"""Evaluation metrics against their formulas and the invariants the evaluation relies on."""

import numpy as np
import pytest
import torch

from stylecore.metrics import METRICS, StylizationMetrics, spread_ratio, ssim
from stylecore.synthetic import synthetic_artwork, synthetic_photo


def _ssim_by_hand(x: torch.Tensor, y: torch.Tensor) -> float:
    """SSIM of one 11×11 single-channel patch: the 2-D Gaussian-weighted statistics written out."""
    g = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    a, b = x.double().numpy(), y.double().numpy()
    mu_a, mu_b = (w * a).sum(), (w * b).sum()
    var_a, var_b = (w * a * a).sum() - mu_a**2, (w * b * b).sum() - mu_b**2
    cov = (w * a * b).sum() - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))


def test_ssim_matches_the_formula_and_its_invariants():
    generator = torch.Generator().manual_seed(0)
    x, y = torch.rand(11, 11, generator=generator), torch.rand(11, 11, generator=generator)
    got = ssim(x.view(1, 1, 11, 11), y.view(1, 1, 11, 11))
    assert got.item() == pytest.approx(_ssim_by_hand(x, y), rel=1e-4)

    image = torch.rand(2, 3, 32, 40, generator=generator)
    assert torch.allclose(ssim(image, image), torch.ones(2))
    other = torch.rand(2, 3, 32, 40, generator=generator)
    assert torch.allclose(ssim(image, other), ssim(other, image))  # symmetric
    noisy = [ssim(image, (image + s * torch.randn(image.shape, generator=generator)).clamp(0, 1)).mean()
             for s in (0.02, 0.1, 0.3)]
    assert noisy[0] > noisy[1] > noisy[2]  # more noise, less structure kept
    # constant images: the structure factor is c2/c2 = 1, the luminance factor is closed-form (float32
    # E[x²] − μ² leaves ~1e-8 of variance, small against c2 = 9e-4 but not nothing: rel 1e-3)
    a, b = torch.full((1, 1, 16, 16), 0.2), torch.full((1, 1, 16, 16), 0.6)
    assert ssim(a, b).item() == pytest.approx((2 * 0.2 * 0.6 + 1e-4) / (0.2**2 + 0.6**2 + 1e-4), rel=1e-3)
    with pytest.raises(ValueError, match="smaller than the 11-pixel window"):
        ssim(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))


def test_spread_ratio_is_a_percentile_ratio():
    values = list(range(1, 11))
    assert spread_ratio(values) == pytest.approx(np.percentile(values, 90) / np.percentile(values, 10))
    assert spread_ratio([0.3, 0.3, 0.3]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="positive losses"):
        spread_ratio([0.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="at least 2"):
        spread_ratio([1.0])


@pytest.fixture(scope="module")
def metrics():
    return StylizationMetrics(encoder_weights="random:0")


def test_known_cases_score_zero_where_they_must(metrics):
    content = torch.stack([synthetic_photo(i, 64) for i in range(3)])
    style = torch.stack([synthetic_artwork(i, "waves", 64) for i in range(3)])
    as_content = metrics(content, content, style)
    assert set(as_content) == set(METRICS) and all(v.shape == (3,) for v in as_content.values())
    assert torch.all(as_content["content"] == 0) and torch.allclose(as_content["ssim"], torch.ones(3))
    assert torch.all(as_content["style_classic"] > 0) and torch.all(as_content["style_balanced"] > 0)
    as_style = metrics(style, content, style)
    for name in ("style_classic", "style_balanced", "mean_std"):
        assert torch.all(as_style[name] == 0), name
    assert torch.all(as_style["content"] > 0) and torch.all(as_style["ssim"] < 1)


def test_held_out_batches_cover_every_pair_once_and_score_as_the_gathered_pairs(metrics):
    from stylecore.heldout import HeldOutPairs, score_pairs
    from stylecore.models import build

    contents = torch.stack([synthetic_photo(i, 48) for i in range(3)])
    styles = torch.stack([synthetic_artwork(i, "waves", 48) for i in range(4)])
    pairs = HeldOutPairs(contents, ["c0", "c1", "c2"], styles, ["s0", "s1", "s2", "s3"])
    seen = []
    for batch_contents, batch_styles, content_index, style_index in pairs.pairs(5):
        # the distinct images of the batch, each once
        assert len(batch_contents) == len(set(content_index.tolist())) and len(batch_styles) == len(set(style_index.tolist()))
        for content, style in zip(batch_contents[content_index], batch_styles[style_index]):
            seen.append(((contents == content).all(dim=(1, 2, 3)).nonzero().item(),
                         (styles == style).all(dim=(1, 2, 3)).nonzero().item()))
    assert seen == [(c, s) for s in range(4) for c in range(3)]  # style-major, every pair once

    torch.manual_seed(0)
    model = build("adain", encoder_weights="random:0").eval()
    values, outputs = score_pairs(model, pairs, metrics, 5, "cpu")
    content_of, style_of = torch.tensor([c for c, _ in seen]), torch.tensor([s for _, s in seen])
    with torch.no_grad():
        expected_outputs = model(contents[content_of], styles[style_of]).clamp(0, 1)
        expected = metrics(expected_outputs, contents[content_of], styles[style_of])
    torch.testing.assert_close(outputs, expected_outputs, atol=1e-5, rtol=1e-4)
    for name in METRICS:
        torch.testing.assert_close(values[name], expected[name], atol=1e-6, rtol=1e-4, msg=name)


def test_scoring_models_together_equals_scoring_each_alone_with_references_encoded_once_per_batch(metrics):
    from stylecore.heldout import HeldOutPairs, score_models, score_pairs
    from stylecore.models import build

    contents = torch.stack([synthetic_photo(i, 48) for i in range(3)])
    styles = torch.stack([synthetic_artwork(i, family, 48) for i, family in enumerate(["waves", "dots", "checks", "noise"])])
    pairs = HeldOutPairs(contents, ["c0", "c1", "c2"], styles, ["s0", "s1", "s2", "s3"])
    torch.manual_seed(0)
    models = {"adain": build("adain", encoder_weights="random:0"), "linear": build("linear", encoder_weights="random:0")}
    models["adain"].eval()
    models["linear"].train()  # a model in the middle of training comes back in training mode
    alone = {name: score_pairs(model, pairs, metrics, 5, "cpu") for name, model in models.items()}

    calls = []
    hook = metrics.encoder.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    try:
        keep = [7, 0, 11]
        together = score_models(models, pairs, metrics, 5, "cpu", keep_outputs=keep)
    finally:
        hook.remove()
    batches = 3  # 12 pairs in batches of 5
    # per batch: the contents and the styles once for both models, then each model's outputs
    assert len(calls) == batches * (2 + len(models))
    assert sum(calls) == sum(len(c) + len(s) for c, s, _, _ in pairs.pairs(5)) + len(models) * len(pairs)
    for name in models:
        values, outputs = together[name]
        torch.testing.assert_close(outputs, alone[name][1][keep], atol=1e-6, rtol=1e-5)
        for metric in METRICS:
            torch.testing.assert_close(values[metric], alone[name][0][metric], atol=1e-6, rtol=1e-5, msg=metric)
    assert models["linear"].training and not models["adain"].training
    with pytest.raises(ValueError, match="keep_outputs.*12 pairs"):
        score_models(models, pairs, metrics, 5, "cpu", keep_outputs=[12])


def test_a_reference_cache_encodes_the_fixed_pairs_once_across_calls_with_the_same_scores(metrics):
    """Sweep validation scores the same pairs at every report: their references are encoded at the first only."""
    from stylecore.heldout import HeldOutPairs, score_pairs
    from stylecore.models import build

    contents = torch.stack([synthetic_photo(i, 48) for i in range(3)])
    styles = torch.stack([synthetic_artwork(i, family, 48) for i, family in enumerate(["waves", "dots"])])
    pairs = HeldOutPairs(contents, ["c0", "c1", "c2"], styles, ["s0", "s1"])
    torch.manual_seed(0)
    model = build("adain", encoder_weights="random:0")
    uncached = score_pairs(model, pairs, metrics, 4, "cpu")[0]
    cache: dict = {}
    calls = []
    hook = metrics.encoder.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    try:
        first = score_pairs(model, pairs, metrics, 4, "cpu", reference_cache=cache)[0]
        encoded_first, calls[:] = len(calls), []
        second = score_pairs(model, pairs, metrics, 4, "cpu", reference_cache=cache)[0]
    finally:
        hook.remove()
    batches = 2  # 6 pairs in batches of 4
    assert encoded_first == batches * 3 and len(calls) == batches  # then only the outputs go through VGG
    for metric in METRICS:
        torch.testing.assert_close(first[metric], uncached[metric], msg=metric)
        torch.testing.assert_close(second[metric], uncached[metric], msg=metric)


def test_the_classic_loss_is_unequal_across_styles_where_the_balanced_loss_is_not(metrics):
    # The same degree of stylization (a 50/50 blend) for styles that differ only in contrast: the
    # classic Gram loss grows with the style's feature magnitude, so it ranks these equally stylized
    # outputs far apart (Cheng et al.'s imbalanced style transferability); the balanced loss does not.
    content = torch.stack([synthetic_photo(i, 64) for i in range(4)])
    classic, balanced = [], []
    for contrast in (0.1, 0.2, 0.4, 0.6, 0.8, 1.0):
        style = torch.stack([0.5 + contrast * (synthetic_artwork(i, "stripes", 64) - 0.5) for i in range(4)])
        scores = metrics(0.5 * content + 0.5 * style, content, style)
        classic.append(float(scores["style_classic"].mean()))
        balanced.append(float(scores["style_balanced"].mean()))
    assert classic[-1] > 10 * classic[0]
    assert spread_ratio(classic) > 5 * spread_ratio(balanced)


def test_over_and_under_stylized_outputs_are_ordered_as_the_seed_paper_describes(metrics):
    # Cheng et al. 2021, Studies I and Fig. 5: under the classic Gram loss an over-stylized output (content
    # barely visible) of a strong style scores WORSE than an under-stylized one (only the colour moved) of a
    # faint style; under the balanced loss the order flips: over-stylized low, under-stylized high.
    content = torch.stack([synthetic_photo(i, 64) for i in range(4)])
    strong = torch.stack([synthetic_artwork(i, "noise", 64) for i in range(4)])  # the highest-magnitude family
    faint = torch.stack([0.5 + 0.15 * (synthetic_artwork(i, "waves", 64) - 0.5) for i in range(4)])
    over = 0.9 * strong + 0.1 * content
    colour_only = (content - content.mean(dim=(2, 3), keepdim=True) + faint.mean(dim=(2, 3), keepdim=True)).clamp(0, 1)
    over_scores, under_scores = metrics(over, content, strong), metrics(colour_only, content, faint)
    assert float(over_scores["style_classic"].mean()) > float(under_scores["style_classic"].mean())
    assert float(over_scores["style_balanced"].mean()) < float(under_scores["style_balanced"].mean())
    # and content is the other way round: the under-stylized output kept far more of it
    assert float(under_scores["ssim"].mean()) > float(over_scores["ssim"].mean())


def test_a_subset_of_the_pairs_lies_where_the_full_style_major_order_puts_it():
    from stylecore.heldout import HeldOutPairs

    contents = torch.stack([synthetic_photo(i, 16) for i in range(3)])
    styles = torch.stack([synthetic_artwork(i, family, 16) for i, family in enumerate(["waves", "dots", "dots"])])
    pairs = HeldOutPairs(contents, ["c0", "c1", "c2"], styles, ["s0", "s1", "s2"], ["waves", "dots", "dots"],
                         ["a0", "a1", "a2"])
    every = [(contents[c], styles[s]) for s in range(3) for c in range(3)]  # the whole set, style-major
    subset, indices = pairs.subset(2, [2, 1])
    assert subset.content_keys == ["c0", "c1"] and subset.style_keys == ["s2", "s1"]
    assert subset.style_labels == ["dots", "dots"] and subset.style_artists == ["a2", "a1"]
    # pair k of the subset is pair indices[k] of the whole set: the same content and style images
    chosen = [(contents[c], styles[s]) for s in (2, 1) for c in range(2)]
    assert len(indices) == len(chosen) == len(subset) == 4
    for k, index in enumerate(indices):
        assert torch.equal(every[index][0], chosen[k][0]) and torch.equal(every[index][1], chosen[k][1])
    with pytest.raises(ValueError, match="not within 3 contents × 3 styles"):
        pairs.subset(4, [0])


def test_a_gan_is_scored_on_its_translation_of_each_content_whatever_the_style_image(metrics):
    from stylecore import gan
    from stylecore.heldout import DomainTranslation, HeldOutPairs, score_models

    torch.manual_seed(0)
    translator = gan.build("cyclegan", width=8, blocks=1, d_width=8, target="dots").eval()
    contents = torch.stack([synthetic_photo(i, 32) for i in range(3)])
    styles = torch.stack([synthetic_artwork(i, "dots", 32) for i in range(2)])
    pairs = HeldOutPairs(contents, ["c0", "c1", "c2"], styles, ["s0", "s1"], ["dots", "dots"])
    values, outputs = score_models({"cyclegan": DomainTranslation(translator, "dots")}, pairs, metrics, 4, "cpu")[
        "cyclegan"]
    translated = translator.translate(contents, "dots")
    # style-major: the three translations under the first style, then the same three under the second
    torch.testing.assert_close(outputs, torch.cat([translated, translated]), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(values["ssim"][:3], values["ssim"][3:])  # the output does not depend on the style
    assert not torch.allclose(values["style_classic"][:3], values["style_classic"][3:])  # its distance to it does
    assert not translator.training
    with pytest.raises(ValueError, match="unknown domain 'waves'.*dots, photo"):
        DomainTranslation(translator, "waves")


def test_a_summary_has_a_spread_only_over_two_styles_or_more():
    from pipelines.evaluation_report import CandidateScores, summarise
    from stylecore.heldout import HeldOutPairs

    contents = torch.zeros(2, 3, 8, 8)
    styles = torch.zeros(2, 3, 8, 8)
    pairs = HeldOutPairs(contents, ["c0", "c1"], styles, ["s0", "s1"], ["dots", "dots"])
    classic = torch.tensor([1.0, 3.0, 4.0, 6.0])  # style-major: s0's two pairs, then s1's
    totals, rows = summarise(CandidateScores({"style_classic": classic}, None), pairs, [90, 10], None)
    assert [row["style_classic"] for row in rows] == [2.0, 5.0] and totals["style_classic"] == 3.5
    assert totals["style_spread"] == pytest.approx(spread_ratio([2.0, 5.0]))
    one, _ = pairs.subset(2, [1])  # a GAN's domain with one held-out artwork: no spread, the rest as ever
    totals, rows = summarise(CandidateScores({"style_classic": classic[2:]}, None), one, [90, 10], None)
    assert "style_spread" not in totals and totals["style_classic"] == 5.0 and len(rows) == 1

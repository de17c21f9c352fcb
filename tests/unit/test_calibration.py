"""Fair balanced-loss weights: the measured weight puts the balanced term where the classic one is.

The check is independent of the calibration's own arithmetic: the calibrated configuration is measured
again from scratch (a fresh Trainer on the same batches) and its style/content ratio compared with the
gram configuration's.
"""

from __future__ import annotations

import dataclasses

import pytest

from stylecore.calibration import calibrate_balanced_weight, measure_terms
from stylecore.config import DataConfig, TrainConfig


def _batches(count: int = 2):
    stream = DataConfig(batch_size=2, crop_size=32).stream("synthetic:photos:8", "synthetic:artworks:8", seed=0)
    return [(batch.content, batch.style) for _, batch in zip(range(count), stream)]


@pytest.mark.parametrize("model", ["adain", "linear"])
def test_the_calibrated_weight_gives_the_balanced_term_the_classic_terms_share(model):
    classic = TrainConfig.from_dict({"model": model, "style_loss": "gram", "model_params": {"encoder_weights": "random:0"}})
    batches = _batches()
    result = calibrate_balanced_weight(classic, iter(batches), batches=2)
    gram_terms, gram_weight = measure_terms(classic, batches)
    balanced = dataclasses.replace(classic, style_loss="balanced_gram", style_params={"weight": result.weight})
    balanced_terms, balanced_weight = measure_terms(balanced, batches)
    assert balanced_weight == pytest.approx(result.weight) and gram_weight == result.classic_weight
    assert balanced_terms["content"] == pytest.approx(gram_terms["content"], rel=1e-6)  # one model, one init
    assert balanced_terms["style"] / balanced_terms["content"] == pytest.approx(
        gram_terms["style"] / gram_terms["content"], rel=1e-4)
    assert result.batches == 2 and result.classic_ratio == pytest.approx(gram_terms["style"] / gram_terms["content"])


def test_models_with_different_classic_weights_get_different_balanced_weights():
    batches = _batches()
    weights = {}
    for model in ("adain", "linear"):
        classic = TrainConfig.from_dict({"model": model, "style_loss": "gram",
                                         "model_params": {"encoder_weights": "random:0"}})
        weights[model] = calibrate_balanced_weight(classic, iter(batches), batches=2)
    # AdaIN's classic style weight is 10, LinearTransfer's 0.02: inheriting them would compare weights
    assert weights["adain"].classic_weight / weights["linear"].classic_weight == pytest.approx(500)
    assert weights["adain"].weight != pytest.approx(weights["linear"].weight, rel=0.01)


def test_calibration_needs_a_batch():
    classic = TrainConfig.from_dict({"model": "adain", "style_loss": "gram", "model_params": {"encoder_weights": "random:0"}})
    with pytest.raises(ValueError, match="at least one batch"):
        calibrate_balanced_weight(classic, iter(_batches()), batches=0)
    with pytest.raises(ValueError, match="gave no batch"):
        calibrate_balanced_weight(classic, iter([]), batches=2)

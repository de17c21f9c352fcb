"""Small, fast model builders for tests: seeded random encoders, MobileNet predictor for Magenta."""

import torch

import stylecore.models as models

OFFLINE_PARAMS = {
    "adain": {"encoder_weights": "random:0"},
    "linear": {"encoder_weights": "random:0"},
    "sanet": {"encoder_weights": "random:0"},
    "magenta": {"encoder_weights": "random:0", "predictor": "mobilenet_v2", "predictor_weights": "random:0"},
    "vae_adain": {"encoder_weights": "random:0"},
    "magenta_lite": {"encoder_weights": "random:0", "weights": "random:0"},  # the published weights: test_magenta_lite
}


def offline_model(name: str, seed: int = 0, **params):
    torch.manual_seed(seed)
    return models.build(name, **{**OFFLINE_PARAMS[name], **params}).eval()


def images(batch: int, height: int, width: int, seed: int) -> torch.Tensor:
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))

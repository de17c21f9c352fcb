"""stylecore: arbitrary style transfer models and the losses that train them, in pure PyTorch."""

__version__ = "0.1.0"


def load(path, device="cpu"):
    """Rebuild a trained model from a checkpoint directory (see :func:`stylecore.training.load`)."""
    from stylecore.training import load as _load

    return _load(path, device=device)

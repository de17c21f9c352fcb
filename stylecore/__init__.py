"""stylecore: arbitrary style transfer models and the losses that train them, in pure PyTorch."""

__version__ = "0.1.0"

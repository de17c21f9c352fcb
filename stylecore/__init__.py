"""stylecore: arbitrary style transfer models and the losses that train them, in pure PyTorch."""

__version__ = "0.1.0"

#: URI schemes :func:`load` hands to MLflow (the registry, a run's or a logged model's artifacts)
MLFLOW_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")


def load(path, device="cpu"):
    """Rebuild a trained model for inference, in eval mode, from a checkpoint directory (see
    :func:`stylecore.training.load`) or an MLflow URI such as ``models:/stylecore-adain-gram@champion``
    (the tracking server from ``MLFLOW_TRACKING_URI``; needs the ``pipeline`` extra)."""
    if isinstance(path, str) and path.startswith(MLFLOW_SCHEMES):
        try:
            import mlflow.pytorch
        except ImportError:
            raise ImportError(f"loading {path} needs MLflow: pip install 'stylecore[pipeline]'") from None
        from stylecore.export import unwrap

        return unwrap(mlflow.pytorch.load_model(path, map_location=device)).to(device).eval()
    from stylecore.training import load as _load

    return _load(path, device=device)

"""stylecore: arbitrary style transfer models and the losses that train them, in pure PyTorch."""

__version__ = "0.1.0"

#: URI schemes of MLflow's stores (the registry, a run's or a logged model's artifacts); :func:`load` hands
#: them to the resolver the ``pipeline`` extra registers
MLFLOW_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")
#: the entry-point group of URI resolvers: ``<scheme> = "module:function"``, called as
#: ``function(uri, device=..., allow_pickle=...)`` and returning the model
RESOLVERS = "stylecore.resolvers"


def uri_scheme(location) -> str | None:
    """``"models"`` for ``models:/…`` and other ``scheme:/`` URIs; None for paths (``C:\\…`` included)."""
    import re

    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]+):/", str(location)) if isinstance(location, str) else None
    return match.group(1).lower() if match else None


def load(path, device=None, allow_pickle: bool = False):
    """Rebuild a trained model for inference, in eval mode, from a checkpoint directory (see
    :func:`stylecore.training.load`), a URI such as ``models:/stylecore-adain-gram@champion``, or
    ``pretrained:<name>`` for a model with published weights (``pretrained:magenta_lite``).

    A URI goes to the resolver registered for its scheme (entry-point group ``stylecore.resolvers``; the
    ``pipeline`` extra registers MLflow's, with the tracking server from ``MLFLOW_TRACKING_URI``). Nothing is
    unpickled: models load from safetensors checkpoints, unless ``allow_pickle=True`` lets a resolver fall back
    to a pickled model from a store you trust. ``device=None`` picks CUDA when it works, else the CPU."""
    if device is None:  # the best device present (CUDA when it works), said when a GPU is there but unusable
        from stylecore.devices import best_device

        device = best_device()
    if isinstance(path, str) and path.startswith("pretrained:"):
        from stylecore.checkpoint import pretrained

        return pretrained(path.split(":", 1)[1], device=device)
    scheme = uri_scheme(path)
    if scheme is None:
        from stylecore.training import load as _load

        return _load(path, device=device)
    from importlib.metadata import entry_points

    found = [entry for entry in entry_points(group=RESOLVERS) if entry.name == scheme]
    if not found:
        raise ImportError(f"loading {path} needs a resolver for {scheme}:/ URIs; for MLflow's, pip install "
                          "'stylecore[pipeline]'")
    return found[0].load()(path, device=device, allow_pickle=allow_pickle)

"""stylecore models in MLflow: logged with their checkpoint (:func:`log_final_model`), and loaded from MLflow URIs
without unpickling anything: the ``stylecore.resolvers`` entry point behind ``stylecore.load("models:/…")``
(and ``runs:/…``, ``mlflow-artifacts:/…``).

Every model the pipeline logs (:func:`log_final_model`) carries its stylecore checkpoint
beside MLflow's pickled module: ``extra_files/config.json`` and ``extra_files/model.safetensors``. Loading
downloads those two files and rebuilds the model from them exactly as from a checkpoint directory, so a
tampered artifact store can change weights but never run code in the CLI, ``stylize-dataset`` or the
stylize stage. MLflow's pickle flavour (``mlflow.pytorch.load_model``) is used only when the caller opts
in with ``allow_pickle=True``, for models logged without the checkpoint.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import tempfile
from pathlib import Path

#: where log_final_model puts the checkpoint files inside the logged model (MLflow's extra_files folder)
CHECKPOINT_FOLDER = "extra_files"
CHECKPOINT_FILES = ("config.json", "model.safetensors")


def checkpoint_files(checkpoint: Path) -> list[str]:
    """The files of ``checkpoint`` to log with the model: what :func:`stylecore.training.load` reads."""
    return [str(Path(checkpoint) / name) for name in CHECKPOINT_FILES]


def _download_checkpoint(uri: str, into: Path) -> Path | None:
    """The checkpoint folder of the logged model at ``uri`` downloaded under ``into``, or None if it has none."""
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    try:  # registry versions and runs:/ URIs take a sub-path: fetch the two small files only
        folder = Path(download_artifacts(artifact_uri=f"{uri.rstrip('/')}/{CHECKPOINT_FOLDER}", dst_path=str(into)))
    except (MlflowException, OSError):
        try:  # a logged model's own URI (models:/m-…) does not: fetch the model folder (downloading runs nothing)
            folder = Path(download_artifacts(artifact_uri=uri, dst_path=str(into / "model"))) / CHECKPOINT_FOLDER
        except (MlflowException, OSError):
            return None
    return folder if all((folder / name).is_file() for name in CHECKPOINT_FILES) else None


def load(uri: str, device="cpu", allow_pickle: bool = False):
    """The stylecore model logged at ``uri``, in eval mode, from its safetensors checkpoint (see module doc)."""
    from mlflow.exceptions import MlflowException

    from stylecore.training import CheckpointError
    from stylecore.training import load as load_checkpoint

    workspace = Path(tempfile.mkdtemp(prefix="stylecore-model-"))
    try:
        try:
            folder = _download_checkpoint(uri, workspace)
        except MlflowException as error:
            raise CheckpointError(f"{uri}: {error.message}") from None
        if folder is not None:
            return load_checkpoint(folder, device=device)
        if not allow_pickle:
            raise CheckpointError(
                f"{uri}: no stylecore checkpoint ({', '.join(CHECKPOINT_FILES)}) is logged beside this model, so it "
                "could only be loaded by unpickling MLflow's copy, which runs whatever code the artifact store holds. "
                "It was logged by an older stylecore or by hand: re-run its train stage to log it again, or, if you "
                "trust this store, pass allow_pickle=True (stylecore.load) or --allow-pickle (the CLI)")
        import mlflow.pytorch

        from stylecore.export import unwrap

        return unwrap(mlflow.pytorch.load_model(uri, map_location=device)).to(device).eval()
    finally:
        shutil.rmtree(workspace, ignore_errors=True)


def log_final_model(checkpoint: Path, crop_size: int) -> str:
    """Log the trained model to the active MLflow run (pickle, with the stylecore code, for pyfunc and
    ``mlflow models serve``; and its safetensors checkpoint, which ``stylecore.load`` reads); returns its URI.

    It is the inference model rebuilt from the checkpoint (no optimizer, no loss network), behind the
    single-tensor interface of :class:`stylecore.export.PackedPairStylizer` so pyfunc and
    ``mlflow models serve`` can run it; the input example is one content|style pair. A GAN translation model is
    logged as :class:`stylecore.export.DomainTranslator`: photos in, ``domain`` a parameter.
    """
    import mlflow
    import numpy as np
    import torch
    from mlflow.models import ModelSignature
    from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec

    import stylecore
    from stylecore.export import PackedPairStylizer, pack_pair

    from stylecore.export import DomainTranslator
    from stylecore.gan import TranslationModel

    model = stylecore.load(checkpoint).eval()
    size = min(crop_size, 64)  # the input example: small, and no larger than the model trained on
    generator = torch.Generator().manual_seed(0)
    if isinstance(model, TranslationModel):  # photos in, the target domain a parameter
        module: torch.nn.Module = DomainTranslator(model)
        example = torch.rand(1, 3, size, size, generator=generator).numpy()
        channels, parameter = 3, ParamSpec("domain", "string", model.domains[0])
        example_params = {"domain": model.domains[0]}
    else:
        module = PackedPairStylizer(model)
        example = pack_pair(torch.rand(1, 3, size, size, generator=generator),
                            torch.rand(1, 3, size, size, generator=generator)).numpy()
        channels, parameter = 6, ParamSpec("alpha", "double", 1.0)
        example_params = {"alpha": 1.0}
    # Any batch and image size (MLflow would infer the example's fixed shape); alpha or domain is a parameter.
    signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype("float32"), (-1, channels, -1, -1))]),
                               outputs=Schema([TensorSpec(np.dtype("float32"), (-1, 3, -1, -1))]),
                               params=ParamSchema([parameter]))
    info = mlflow.pytorch.log_model(
        module, name="model", signature=signature, input_example=(example, example_params),
        serialization_format="pickle", code_paths=[str(Path(stylecore.__file__).parent)],
        # the checkpoint beside it: stylecore.load("models:/…") rebuilds the model from these, unpickling nothing
        extra_files=checkpoint_files(checkpoint),
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}",
                          # the installed version, without importing torchvision (1–3 s) only to read it
                          f"torchvision=={importlib.metadata.version('torchvision').split('+')[0]}",
                          "safetensors", "pillow", "pyyaml"])
    return info.model_uri

"""Loading stylecore models from MLflow URIs without unpickling anything: the ``stylecore.resolvers`` entry
point behind ``stylecore.load("models:/…")`` (and ``runs:/…``, ``mlflow-artifacts:/…``).

Every model the pipeline logs (:func:`pipelines.train.log_final_model`) carries its stylecore checkpoint
beside MLflow's pickled module: ``extra_files/config.json`` and ``extra_files/model.safetensors``. Loading
downloads those two files and rebuilds the model from them exactly as from a checkpoint directory, so a
tampered artifact store can change weights but never run code in the CLI, ``stylize-dataset`` or the
stylize stage. MLflow's pickle flavour (``mlflow.pytorch.load_model``) is used only when the caller opts
in with ``allow_pickle=True``, for models logged without the checkpoint.
"""

from __future__ import annotations

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

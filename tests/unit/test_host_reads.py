"""A training step never reads a tensor back to the host (issue 25 item 6): on an accelerator each read waits for
all the work queued before it. CUDA's sync debug mode checks this on a GPU (bench/device_check.py's host-syncs
check); here every Python-level read of a tensor's value is counted on CPU, so the rule holds between GPU
sessions too."""

import contextlib

import pytest
import torch

from stylecore.data import PairStream, SyntheticImages
from stylecore.gan.training import paper_config
from stylecore.training import Trainer, TrainingHooks

from model_helpers import OFFLINE_PARAMS
from test_gan import FAMILIES, STARGAN_TINY, TINY, UGATIT_TINY, _labelled_batch

READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")


@contextlib.contextmanager
def counting_host_reads():
    """Counts the calls of every Tensor method that copies a value to the host, by name."""
    counts: dict[str, int] = {}
    originals = {name: getattr(torch.Tensor, name) for name in READS}

    def counting(name):
        def read(self, *args, **kwargs):
            counts[name] = counts.get(name, 0) + 1
            return originals[name](self, *args, **kwargs)
        return read

    for name in READS:
        setattr(torch.Tensor, name, counting(name))
    try:
        yield counts
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


def _batches(batch=2):
    stream = PairStream(SyntheticImages("photos", 6, 40, seed=1), SyntheticImages("artworks", 5, 40, seed=2),
                        batch_size=batch, crop_size=32, seed=0)
    return [stream.batch(i) for i in range(3)]


# each configuration a path of the step: the default Adam step, STROTSS's sampled hypercolumns and palette,
# gradient clipping, a two-phase model
ARBITRARY = [("adain", {}), ("adain", {"style_loss": "remd", "objective": {"palette": {"weight": 1.0}}}),
             ("adain", {"grad_clip": 1.0}), ("linear", {}), ("sanet", {})]


@pytest.mark.parametrize("name,overrides", ARBITRARY, ids=lambda v: v if isinstance(v, str) else "-".join(v) or "default")
def test_an_arbitrary_style_step_reads_nothing_back_to_the_host(name, overrides):
    trainer = Trainer({"model": name, "model_params": dict(OFFLINE_PARAMS[name]), "steps": 100, "seed": 0,
                       "max_nonfinite_steps": 50, **overrides}, device="cpu")
    batches = _batches()
    trainer.train_step(batches[0].content, batches[0].style)  # lazy set-up (encoders, phases) may read once
    with counting_host_reads() as counts:
        result = trainer.train_step(batches[1].content, batches[1].style)
    assert counts == {}, f"the step read tensors back to the host: {counts}"
    with counting_host_reads() as counts:  # the counter works: reading the figures is one transfer
        assert result.terms["total"] > 0 and not result.skipped
    assert counts.get("tolist") == 1


@pytest.mark.parametrize("model", ["cyclegan", "ugatit", "stargan"])
def test_a_gan_step_reads_nothing_back_to_the_host(model):
    params = {"cyclegan": TINY, "ugatit": UGATIT_TINY, "stargan": {**STARGAN_TINY, "domains": FAMILIES}}[model]
    trainer = Trainer(paper_config(model, model_params=params, steps=100, n_critic=1, precision="fp32",
                                   max_nonfinite_steps=50), device="cpu")
    batch = _labelled_batch()
    trainer.train_step(batch["content"], batch["style"], style_labels=batch["style_labels"])
    with counting_host_reads() as counts:
        trainer.train_step(batch["content"], batch["style"], style_labels=batch["style_labels"])
    assert counts == {}, f"the {model} step read tensors back to the host: {counts}"


class _Reads(TrainingHooks):
    def __init__(self):
        self.steps = []

    def on_step(self, trainer, result):
        self.steps.append(result)


def test_the_guard_reads_the_device_only_every_max_nonfinite_steps():
    trainer = Trainer({"model": "adain", "model_params": dict(OFFLINE_PARAMS["adain"]), "steps": 100, "seed": 0,
                       "max_nonfinite_steps": 4}, device="cpu", hooks=[_Reads()])
    batches = _batches()
    reads = []
    for step in range(8):
        with counting_host_reads() as counts:
            trainer.train_step(batches[step % 3].content, batches[step % 3].style)
        reads.append(sum(counts.values()))
    assert [bool(n) for n in reads] == [False, False, False, True] * 2, reads


def test_mlflow_gets_every_steps_figures_but_once_a_report(tmp_path):
    from mlflow.tracking import MlflowClient

    from pipelines.mlflow_hooks import MLflowHooks
    from pipelines.tracking import default_tracking_uri, start_run

    uri = default_tracking_uri(tmp_path)
    run_id = start_run(uri, "buffer-test", tmp_path / "artifacts", "adain", {"train": {"model": "adain"}},
                       {"model": "adain"})
    hook = MLflowHooks(uri, run_id, every=4, total=6)
    trainer = Trainer({"model": "adain", "model_params": dict(OFFLINE_PARAMS["adain"]), "steps": 6, "seed": 0},
                      device="cpu", hooks=[hook])
    client = MlflowClient(uri)
    logged = lambda: sorted(m.step for m in client.get_metric_history(run_id, "loss/total"))  # noqa: E731
    batches = _batches()
    for step in range(1, 7):
        trainer.train_step(batches[step % 3].content, batches[step % 3].style)
        assert logged() == (list(range(1, 5)) if 4 <= step < 6 else [] if step < 4 else list(range(1, 7))), step
    history = client.get_metric_history(run_id, "lr")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == list(range(1, 7))

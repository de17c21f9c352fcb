"""The training loop under torch.distributed (gloo on CPU): DDP keeps the ranks' weights identical."""

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from stylecore.data import PairStream, SyntheticImages
from stylecore.training import Trainer

from model_helpers import OFFLINE_PARAMS


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, model: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        params = dict(OFFLINE_PARAMS[model], **({"autoencoder_fraction": 0.5} if model == "linear" else {}))
        trainer = Trainer({"model": model, "model_params": params, "steps": 4, "lr": 1e-3, "seed": 0}, device="cpu")
        assert trainer.distributed
        initial = {k: v.clone() for k, v in trainer.model.persistent_state().items()}
        data = PairStream(SyntheticImages("photos", 6, 40), SyntheticImages("artworks", 5, 40), batch_size=2,
                          crop_size=32, seed=0, rank=rank, world_size=world)  # each rank its own batches
        trainer.fit(data)
        torch.save({"initial": initial, "final": trainer.model.persistent_state()}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _run(model: str, tmp_path) -> list[dict]:
    mp.spawn(_worker, args=(2, _free_port(), model, str(tmp_path)), nprocs=2, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]


def test_ddp_ranks_train_on_different_data_and_stay_identical(tmp_path):
    rank0, rank1 = _run("adain", tmp_path)
    for key, value in rank0["final"].items():
        torch.testing.assert_close(value, rank1["final"][key], rtol=0, atol=1e-6)
    assert any(not torch.equal(rank0["initial"][k], rank0["final"][k]) for k in rank0["final"])


def test_ddp_handles_a_model_whose_phases_train_different_parts(tmp_path):
    rank0, rank1 = _run("linear", tmp_path)
    for key, value in rank0["final"].items():
        torch.testing.assert_close(value, rank1["final"][key], rtol=0, atol=1e-6)
    changed = {k.split(".")[0] for k in rank0["final"] if not torch.equal(rank0["initial"][k], rank0["final"][k])}
    assert changed == {"decoder", "transform"}


def _one_step_worker(rank: int, world: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        content, style = _fixed_batch()
        trainer = Trainer({"model": "adain", "model_params": OFFLINE_PARAMS["adain"], "steps": 1, "lr": 1e-3,
                           "seed": 0}, device="cpu")
        half = content.shape[0] // world
        trainer.train_step(content[rank * half:(rank + 1) * half], style[rank * half:(rank + 1) * half])
        if rank == 0:
            torch.save(_first_moments(trainer), f"{out}/ddp.pt")
    finally:
        dist.destroy_process_group()


def _first_moments(trainer: Trainer) -> dict:
    """Adam's first moment after one step is (1 − β1) × the gradient the step used: the averaged gradient
    under DDP. Compared instead of the weights because Adam's first update, lr × g / (|g| + eps), turns
    float-rounding differences of near-zero gradients into visible weight differences."""
    return {name: trainer.optimizer.state[p]["exp_avg"].clone() for name, p in trainer.model.named_parameters()
            if p in trainer.optimizer.state}


def _fixed_batch():
    g = torch.Generator().manual_seed(5)
    return torch.rand(4, 3, 32, 32, generator=g), torch.rand(4, 3, 32, 32, generator=g)


def _assert_same_gradients(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a
    for key, value in b.items():
        scale = float(value.abs().max())  # rounding differs with batch split and kernel choice; a missing
        # average (the contrast below) is off by the order of the gradient itself
        torch.testing.assert_close(a[key], value, rtol=1e-2, atol=5e-3 * scale, msg=lambda m: f"{key}: {m}")


def test_ddp_is_real_two_ranks_of_b_equal_one_process_of_2b(tmp_path):
    """DDP averages gradients: one step on 2 ranks × batch 2 uses the gradient of 1 process × batch 4."""
    mp.spawn(_one_step_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    distributed = torch.load(tmp_path / "ddp.pt")
    content, style = _fixed_batch()
    config = {"model": "adain", "model_params": OFFLINE_PARAMS["adain"], "steps": 1, "lr": 1e-3, "seed": 0}
    single = Trainer(config, device="cpu")
    single.train_step(content, style)
    expected = _first_moments(single)
    assert any(float(v.abs().max()) > 0 for v in expected.values())  # a real gradient, so the comparison means something
    _assert_same_gradients(distributed, expected)
    # Without gradient averaging, rank 0 would have stepped on its half alone: that is measurably different.
    alone = Trainer(config, device="cpu")
    alone.train_step(content[:2], style[:2])
    with pytest.raises(AssertionError):
        _assert_same_gradients(_first_moments(alone), expected)

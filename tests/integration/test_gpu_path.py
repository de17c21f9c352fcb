"""The GPU path's decisions, checked on a CPU machine: how many workers on which device for a given cluster,
what DDP refuses, where inference runs, and what a checkpoint keeps of the CUDA RNG."""

import pytest
import torch

from pipelines.ray_session import decide_scaling as _decide, describe_scale
from pipelines.settings import RaySettings, TrainStageError
from stylecore.devices import best_device, unusable_gpu_reason

DEFAULTS = {"workers": 2, "use_gpu": "auto", "gpus_per_worker": 1, "threads_per_worker": "auto", "max_failures": 0,
            "keep_checkpoints": 1}


def decide_scaling(settings, resources, **kwargs):
    return _decide(RaySettings(**settings), resources, **kwargs)


def test_auto_trains_on_the_gpus_there_are_capping_the_workers_on_one_machine():
    one_gpu = decide_scaling(DEFAULTS, {"CPU": 16, "GPU": 1}, local=True)
    assert (one_gpu.use_gpu, one_gpu.num_workers) == (True, 1)  # was: 2 CPU workers over gloo, silently
    assert "workers=2 capped at 1" in one_gpu.notice and "1 GPU(s)" in one_gpu.notice
    eight = decide_scaling(DEFAULTS, {"CPU": 64, "GPU": 8}, local=True)
    assert (eight.use_gpu, eight.num_workers, eight.notice) == (True, 2, "")
    cpu = decide_scaling(DEFAULTS, {"CPU": 2}, local=True)
    assert (cpu.use_gpu, cpu.num_workers, cpu.threads_per_worker) == (False, 2, 1)
    # a named cluster whose GPU nodes are not up yet: its autoscaler may add them, so nothing is refused there
    cluster = decide_scaling({**DEFAULTS, "use_gpu": True}, {"CPU": 8}, local=False)
    assert (cluster.use_gpu, cluster.num_workers) == (True, 2)


def test_auto_workers_are_one_rank_per_gpu_in_reach_else_one_per_node_and_in_process_on_this_machines_cpus():
    auto = {**DEFAULTS, "workers": "auto"}
    eight = decide_scaling(auto, {"CPU": 64, "GPU": 8}, local=True)
    assert (eight.use_gpu, eight.num_workers, eight.notice) == (True, 8, "")
    # this machine's own Ray without GPUs: one rank in the stage's process (Ray Train's local mode), every CPU
    # its torch threads; workers: 1 is the same rank in a worker process that Ray restarts
    here, one = decide_scaling(auto, {"CPU": 2}, local=True), decide_scaling({**DEFAULTS, "workers": 1}, {"CPU": 2}, local=True)
    assert (here.in_process, here.ranks, here.threads_per_worker, here.tag()) == (True, 1, 2, "1 × CPU in-process")
    assert (one.in_process, one.ranks, one.threads_per_worker, one.tag()) == (False, 1, 2, "1 × CPU")
    assert "Ray Train in this process (local mode) on CPU (2 torch thread(s))" in describe_scale(here)
    # in-process on a GPU: the one GPU is still asked of this machine
    assert decide_scaling({**DEFAULTS, "workers": 0}, {"CPU": 8, "GPU": 1}, local=True).tag() == "1 × GPU in-process"
    with pytest.raises(TrainStageError, match="asks for 1 workers × 1.0 GPU but Ray has 0 GPUs"):
        decide_scaling({**DEFAULTS, "workers": 0, "use_gpu": True}, {"CPU": 8}, local=True)
    # a CPU cluster of three nodes: a rank on each, each with its node's share of threads
    three = decide_scaling(auto, {"CPU": 24}, local=False, nodes=3)
    assert (three.use_gpu, three.num_workers, three.threads_per_worker) == (False, 3, 8)
    # GPU nodes not up yet: one rank per GPU the autoscaler can bring
    waiting = decide_scaling(auto, {"CPU": 8}, local=False, reachable={"CPU": 72, "GPU": 4})
    assert (waiting.use_gpu, waiting.num_workers) == (True, 4)
    # a fraction of a GPU per worker never makes several DDP ranks share the GPUs
    half = decide_scaling({**auto, "gpus_per_worker": 0.5}, {"CPU": 8, "GPU": 2}, local=True)
    assert (half.use_gpu, half.num_workers) == (True, 1)
    from pipelines.settings import read_ray
    from pipelines.sources import CatalogueError

    with pytest.raises(CatalogueError, match=r"train.ray.workers='many' is invalid; it must be one of auto or an integer ≥ 0"):
        read_ray({"train": {"ray": {**DEFAULTS, "workers": "many"}}})


def test_auto_asks_for_gpus_the_autoscalers_node_types_can_add_and_caps_the_workers_at_them():
    # cluster.yaml's GPU node types start at min_workers 0: no GPU is up when the stage starts
    waiting = decide_scaling(DEFAULTS, {"CPU": 8}, local=False, reachable={"CPU": 72, "GPU": 8})
    assert (waiting.use_gpu, waiting.num_workers) == (True, 2)
    assert "no GPU node is up yet" in waiting.notice and "reach 8 GPU(s)" in waiting.notice
    one = decide_scaling({**DEFAULTS, "workers": 4}, {"CPU": 8}, local=False, reachable={"GPU": 1})
    assert (one.use_gpu, one.num_workers) == (True, 1) and "workers=4 capped at 1" in one.notice
    # a CPU-only autoscaling cluster, or no autoscaler at all: CPU, as before
    for reachable in ({"CPU": 64}, {}, None):
        assert not decide_scaling(DEFAULTS, {"CPU": 8}, local=False, reachable=reachable).use_gpu


def test_impossible_requests_are_errors_that_name_the_key():
    with pytest.raises(TrainStageError, match=r"use_gpu: false"):
        decide_scaling({**DEFAULTS, "use_gpu": True}, {"CPU": 8}, local=True)
    with pytest.raises(TrainStageError, match=r"train.ray.workers=4 needs 4 CPUs"):
        decide_scaling({**DEFAULTS, "workers": 4, "use_gpu": False}, {"CPU": 2}, local=True)
    from pipelines.settings import read_ray
    from pipelines.sources import CatalogueError

    with pytest.raises(CatalogueError, match=r"train.ray.use_gpu='yes' is invalid; it must be one of auto or true or false"):
        read_ray({"train": {"ray": {**DEFAULTS, "use_gpu": "yes"}}})


def test_ddp_ranks_never_share_a_gpu_but_a_single_trial_may_take_a_fraction():
    with pytest.raises(TrainStageError, match="Duplicate GPU detected.*gpus_per_worker: 1"):
        decide_scaling({**DEFAULTS, "gpus_per_worker": 0.5}, {"CPU": 8, "GPU": 1}, local=True)
    with pytest.raises(TrainStageError, match="sweep.gpus_per_worker=0.5"):
        decide_scaling({**DEFAULTS, "gpus_per_worker": 0.5, "use_gpu": True}, {"CPU": 8}, local=False, where="sweep")
    single = decide_scaling({**DEFAULTS, "workers": 1, "gpus_per_worker": 0.25}, {"CPU": 8, "GPU": 1}, local=True)
    assert (single.use_gpu, single.num_workers, single.gpus_per_worker) == (True, 1, 0.25)


def test_inference_runs_on_the_best_device_and_an_unusable_gpu_is_named(tmp_path):
    import stylecore
    from stylecore.training import Trainer

    trainer = Trainer({"model": "adain", "steps": 1, "model_params": {"encoder_weights": "random:0"}})
    checkpoint = trainer.save_checkpoint(tmp_path / "run")
    assert stylecore.load(checkpoint).device == best_device()  # no more device="cpu" by default
    if torch.cuda.is_available():
        assert best_device().type == "cuda"
        return
    driver = tmp_path / "version"
    driver.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  470.57.02  Tue Jul 13 16:14:05 UTC 2021\n")
    reason = unusable_gpu_reason(driver)
    assert "driver 470.57.02" in reason and f"torch {torch.__version__}" in reason and "running on CPU" in reason
    assert unusable_gpu_reason(tmp_path / "no-driver") is None  # no NVIDIA driver: nothing to say


def test_a_checkpoint_keeps_only_its_own_devices_cuda_rng_state(tmp_path):
    """Ray shows a node's GPUs to every worker on it: saving every visible GPU's state made a resume that sees
    fewer GPUs fail with IndexError, every retry. The state now holds the trainer's device's only."""
    from stylecore.training import Trainer, load_trainer_state

    trainer = Trainer({"model": "adain", "steps": 2, "model_params": {"encoder_weights": "random:0"}}, device="cpu")
    path = trainer.save_checkpoint(tmp_path / "run")
    rng = load_trainer_state(path / "trainer.pt")["rng"]
    assert set(rng) == {"torch", "numpy", "python"}  # a CPU trainer stores no CUDA state at all
    assert isinstance(rng["numpy"]["keys"], torch.Tensor) and isinstance(rng["python"]["state"], list)
    if torch.cuda.is_available():
        gpu = Trainer({"model": "adain", "steps": 2, "model_params": {"encoder_weights": "random:0"}}, device="cuda")
        gpu.train_step(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32))
        cuda_state = load_trainer_state(gpu.save_checkpoint(tmp_path / "gpu") / "trainer.pt")["rng"]["cuda"]
        assert isinstance(cuda_state, torch.Tensor)  # one device's state, not a list of every visible GPU's


def test_cuda_math_is_tuned_for_training_and_inference_and_left_alone_elsewhere():
    from stylecore.devices import tune_cuda_math

    saved = (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision,
             torch.backends.cudnn.benchmark)
    try:
        torch.backends.cuda.matmul.fp32_precision = "ieee"
        torch.backends.cudnn.conv.fp32_precision = "ieee"
        torch.backends.cudnn.benchmark = False
        tune_cuda_math(torch.device("cpu"), fixed_shapes=True)  # nothing on CPU
        assert (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.benchmark) == ("ieee", False)
        tune_cuda_math("cuda", fixed_shapes=False)  # inference: TF32, but photos of many sizes are not autotuned
        assert torch.backends.cuda.matmul.fp32_precision == torch.backends.cudnn.conv.fp32_precision == "tf32"
        assert not torch.backends.cudnn.benchmark
        torch.use_deterministic_algorithms(True)
        try:
            tune_cuda_math("cuda", fixed_shapes=True)  # asked-for repeatable kernels: no autotuner
            assert not torch.backends.cudnn.benchmark
        finally:
            torch.use_deterministic_algorithms(False)
        tune_cuda_math("cuda", fixed_shapes=True)
        assert torch.backends.cudnn.benchmark
    finally:
        (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision,
         torch.backends.cudnn.benchmark) = saved


def test_every_profile_loads_at_most_the_stored_size_and_a_larger_load_size_is_refused():
    """Item 5: the stored size and the load size agree (the full profile's load_size 512 read images stored at
    256, upscaling each 2× before its crop)."""
    from pathlib import Path

    import yaml

    from pipelines.settings import PIPELINE_TRAIN_KEYS, check_load_size
    from stylecore.config import ConfigError, training_settings

    params = yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text())
    checked = []
    for profile in params["profiles"]:
        for model in params["train"]["grid"]["models"]:
            for loss in params["train"]["grid"]["losses"]:
                settings = training_settings(params["train"], model, loss, profile, PIPELINE_TRAIN_KEYS)
                check_load_size(params, settings.data, f"train.profiles.{profile}")
                checked.append(settings.data.load_size or settings.data.crop_size)
    assert max(checked) == 512 <= params["shard"]["store_size"]  # the full profile's AdaIN-style 512 → 256 crops
    params["shard"]["store_size"] = 256
    full = training_settings(params["train"], "adain", "gram", "full", PIPELINE_TRAIN_KEYS)
    with pytest.raises(ConfigError, match=r"train.profiles.full.load_size=512 is above shard.store_size=256: every "
                                          r"stored image would be upscaled 2× .* Raise shard.store_size to at least 512"):
        check_load_size(params, full.data, "train.profiles.full")

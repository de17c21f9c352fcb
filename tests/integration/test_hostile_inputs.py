"""The hostile-input suite: tests/hostile_corpus.py's odd images, escaping archives, path-like shard keys,
malformed params and crafted pickles, through every entry point that takes them. Each must end in a clear
error or a listed rejection, with nothing written outside the output, no code run and nothing lost."""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
import yaml

import hostile_corpus as corpus
from pipelines.fetch import UnsafeArchive, extract
from pipelines.sources import load_params
from stylecore.cli import main as cli
from stylecore.data import ImageLoadError, load_image, save_image
from stylecore.shards import Rejected, SourceItem, prepare_image, write_shards
from stylecore.synthetic import synthetic_artwork, synthetic_photo
from stylecore.training import CheckpointError, Trainer

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def marker(tmp_path, monkeypatch):
    """The file a crafted pickle's payload creates: it must never exist."""
    path = tmp_path / "code-ran"
    monkeypatch.setenv(corpus.MARKER_ENV, str(path))
    return path


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# ---------------------------------------------------------------------------------------------------
# Images: the shard stage and every image reader


def test_every_odd_image_is_sharded_or_rejected_with_its_reason(tmp_path):
    cases = corpus.odd_images()
    raw = tmp_path / "raw"
    raw.mkdir()
    for case in cases:
        (raw / case.name).write_bytes(case.data)
    results = {case.name: prepare_image(raw, SourceItem(case.name), "mine", "train", 48, 90, 16, 10**7)
               for case in cases}
    for case in cases:
        result = results[case.name]
        if case.expect == "accept":
            assert not isinstance(result, Rejected), f"{case.name} was rejected: {result.reason}"
            assert min(result.meta["stored_size"]) == 48
        else:
            assert isinstance(result, Rejected), f"{case.name} was accepted"
            assert __import__("re").search(case.reason, result.reason), f"{case.name}: {result.reason}"
    # the size recorded is the size as shown: EXIF orientation 6 turns a stored 96×64 into 64×96
    assert results["rotated.jpg"].meta["original_size"] == [64, 96]
    manifest = write_shards(results.values(), tmp_path / "shards", "mine", maxcount=100)
    assert manifest["samples"] == sum(c.expect == "accept" for c in cases)
    assert {r["path"] for r in manifest["rejected"]} == {c.name for c in cases if c.expect == "reject"}
    # the same decoder reads images for training and stylization: the same verdicts (a tiny image is readable)
    for case in cases:
        if case.expect == "accept" or case.name == "tiny.png":
            assert load_image(raw / case.name).shape[0] == 3
        else:
            with pytest.raises(ImageLoadError, match=case.name):
                load_image(raw / case.name)


def test_a_large_jpeg_is_read_at_a_reduced_scale_when_the_stored_size_allows(tmp_path):
    (tmp_path / "large.jpg").write_bytes(corpus._encode(corpus._gradient((1600, 1200)), "JPEG"))
    budget = 1_000_000  # 1.92 MP over the budget: refused before, although the shard stores 64 px
    kept = prepare_image(tmp_path, SourceItem("large.jpg"), "mine", "train", 64, 90, 16, budget)
    assert not isinstance(kept, Rejected), kept
    assert kept.meta["original_size"] == [1600, 1200] and kept.meta["stored_size"] == [85, 64]
    refused = prepare_image(tmp_path, SourceItem("large.jpg"), "mine", "train", 1000, 90, 16, budget)
    assert isinstance(refused, Rejected) and "decompression bomb" in refused.reason


# ---------------------------------------------------------------------------------------------------
# Archives: download/extract


def test_every_escaping_archive_is_refused_and_writes_nothing(tmp_path):
    work = tmp_path / "work"
    archives = corpus.hostile_tars(tmp_path / "archives") + corpus.hostile_zips(tmp_path / "archives")
    before = _tree(tmp_path)
    for archive, reason in archives:
        with pytest.raises(UnsafeArchive, match=reason):
            extract(archive, work / "deep" / "files")
    assert _tree(tmp_path) - before == {"work", "work/deep"}  # the destination's parent, and nothing else
    assert not Path("/tmp/stylecore-escaped.txt").exists()


# ---------------------------------------------------------------------------------------------------
# Checkpoints and registries: no code runs from a loaded file


def _checkpoint_run(tmp_path) -> Path:
    trainer = Trainer({"model": "adain", "steps": 4, "model_params": {"encoder_weights": "random:0"}})
    trainer.train_step(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32))
    return trainer.save_checkpoint(tmp_path / "run")


def test_a_crafted_trainer_state_is_refused_on_resume_and_runs_nothing(tmp_path, marker, capsys):
    checkpoint = _checkpoint_run(tmp_path)
    (checkpoint / "trainer.pt").write_bytes(corpus.crafted_pickle())
    for name, family in (("content", "waves"), ("style", "checks")):
        for i in range(2):
            save_image(synthetic_photo(i, 32) if name == "content" else synthetic_artwork(i, family, 32),
                       tmp_path / name / f"{i}.png")
    code = cli(["train", "--content", str(tmp_path / "content"), "--style", str(tmp_path / "style"), "--steps", "4",
                "--batch-size", "2", "--size", "32", "--weights", "random:0", "--output", str(tmp_path / "run"), "--quiet"])
    assert code == 2
    assert "refused to load the trainer state" in capsys.readouterr().err
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="never unpickles"):
        Trainer({"model": "adain", "steps": 4, "model_params": {"encoder_weights": "random:0"}}).load_checkpoint(checkpoint)
    assert not marker.exists()
    assert __import__("stylecore").load(checkpoint).name == "adain"  # the weights are still there to use


def test_temporaries_of_an_interrupted_checkpoint_write_are_removed_at_the_next_start(tmp_path):
    checkpoint = _checkpoint_run(tmp_path)
    stale = [tmp_path / "run" / f".step-000002.{'a' * 32}.tmp", tmp_path / "run" / f".step-000001.{'b' * 32}.old"]
    for folder in stale:
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"\0" * 1024)
    trainer = Trainer({"model": "adain", "steps": 2, "model_params": {"encoder_weights": "random:0"}})
    trainer.fit([(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32))] * 2, checkpoint_dir=tmp_path / "run")
    assert not any(folder.exists() for folder in stale)
    assert checkpoint.exists()  # complete checkpoints are untouched


def test_a_registered_model_without_a_checkpoint_is_not_unpickled_unless_asked(tmp_path, marker):
    mlflow = pytest.importorskip("mlflow")
    import stylecore

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        experiment = mlflow.create_experiment("hostile", artifact_location=str(tmp_path / "artifacts"))
        with mlflow.start_run(experiment_id=experiment):
            mlflow.pytorch.log_model(torch.nn.Linear(2, 2), name="model", serialization_format="pickle",
                                     registered_model_name="evil", pip_requirements=["torch"])
        # a tampered artifact store: the pickled module replaced by one whose unpickling runs a command
        [pickled] = list((tmp_path / "artifacts").rglob("model.pth"))
        pickled.write_bytes(corpus.crafted_pickle())
        assert not marker.exists()
        with pytest.raises(CheckpointError, match="no stylecore checkpoint.*allow_pickle=True"):
            stylecore.load("models:/evil/1")
        assert not marker.exists()
        with pytest.raises(Exception):  # the opt-in is real: MLflow's loader unpickles, and the payload runs
            stylecore.load("models:/evil/1", allow_pickle=True)
        assert marker.exists()
    finally:
        mlflow.set_tracking_uri(previous)


# ---------------------------------------------------------------------------------------------------
# Settings: every config error before Ray starts, never retried


def _params(edit) -> dict:
    params = load_params(REPO / "params.yaml")
    edit(params)
    return params


BAD_SETTINGS = [
    ("an unknown loss in the grid", lambda p: p["train"]["grid"]["losses"].append("no_such_loss"), "no_such_loss",
     r"unknown loss 'no_such_loss'"),
    ("a style_params typo", lambda p: p["train"]["losses"].update(gram={"style_params": {"wieght": 2.0}}), "gram",
     r"unknown key\(s\) wieght"),
    ("a missing weights file", lambda p: p["train"]["models"]["adain"].update(
        model_params={"encoder_weights": "/nonexistent/vgg.safetensors"}), "gram", "vgg.safetensors does not exist"),
    ("a model parameter typo", lambda p: p["train"]["models"]["adain"].update(model_params={"encoder_wieghts": "x"}),
     "gram", "encoder_wieghts"),
    ("an objective term that names nothing", lambda p: p["train"]["losses"].update(gram={"objective": {"stlye": 2.0}}),
     "gram", "unknown loss 'stlye'"),
    ("a string for a number", lambda p: p["train"]["profiles"]["demo"].update(grad_clip="1"), "gram",
     "grad_clip must be a number"),
    ("a word for a count", lambda p: p["train"]["ray"].update(keep_checkpoints="two"), "gram",
     "keep_checkpoints='two' is invalid"),
    ("retry forever", lambda p: p["train"]["ray"].update(max_failures=-1), "gram", "max_failures=-1 is invalid"),
    ("a fractional worker count", lambda p: p["train"]["ray"].update(workers=1.5), "gram", "workers=1.5 is invalid"),
]


@pytest.mark.parametrize("what, edit, loss, message", BAD_SETTINGS, ids=[case[0] for case in BAD_SETTINGS])
def test_a_bad_setting_fails_before_ray_with_the_key(tmp_path, what, edit, loss, message):
    from pipelines.settings import resolve_combination
    from pipelines.sources import CatalogueError

    # resolve_combination is what the stage runs before it starts or joins Ray (see the stage test below)
    with pytest.raises(CatalogueError, match=message):
        resolve_combination(_params(edit), "adain", loss, tmp_path / "no-shards")


def test_a_bad_setting_stops_the_real_stage_before_ray_and_is_not_retried(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(_params(lambda p: p["train"]["losses"].update(
        gram={"style_params": {"wieght": 2.0}}))))
    env = {key: value for key, value in os.environ.items() if key not in ("RAY_ADDRESS", "STYLECORE_LOCAL_RAY")}
    done = subprocess.run([sys.executable, "-m", "pipelines.train", "--model", "adain", "--loss", "gram", "--params",
                           str(path), "--shards", str(tmp_path / "shards")], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "unknown key(s) wieght" in done.stderr and "Traceback" not in done.stderr
    assert "ray:" not in done.stdout  # no Ray was started (or joined), so nothing was retried


def test_a_sweep_space_with_a_misspelt_key_fails_before_any_trial(tmp_path):
    from pipelines.search_space import check_space
    from pipelines.settings import Combination, read_ray
    from pipelines.sources import CatalogueError
    from stylecore.config import DataConfig, TrainConfig

    train = TrainConfig.from_dict({"model": "adain", "style_loss": "gram", "steps": 4,
                                   "model_params": {"encoder_weights": "random:0"}})
    combination = Combination("adain", "gram", "demo", train, DataConfig(batch_size=2, crop_size=32),
                              read_ray(_params(lambda p: None)), report_every=2, weights=None)
    with pytest.raises(CatalogueError, match=r"sweep.combinations.adain-gram.*unknown key\(s\) wieght"):
        check_space("adain-gram", combination, {"style_params.wieght": {"grid": [1.0, 2.0]}})


def test_more_workers_than_the_machine_has_fails_at_once_inside_a_real_stage(tmp_path):
    """Ray Train used to wait forever for a third CPU: the guard read RAY_ADDRESS after the stage's own local
    instance had set it. The stage now fails in seconds, naming the key."""
    from pipelines import download, shard

    params = _params(lambda p: (p["train"]["ray"].update(workers=(os.cpu_count() or 1) + 1),
                                p["sources"]["demo_photos"].update(count={"train": 8, "val": 2}),
                                p["sources"]["demo_artworks"].update(count={"train": 5, "val": 5})))
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    for source in ("demo_photos", "demo_artworks"):
        download.run(source, path, tmp_path / "raw", progress=False)
        shard.run(source, "train", path, tmp_path / "raw", tmp_path / "shards", progress=False)
    env = {key: value for key, value in os.environ.items() if key not in ("RAY_ADDRESS", "STYLECORE_LOCAL_RAY")}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    stage = subprocess.Popen([sys.executable, "-m", "pipelines.train", "--model", "adain", "--loss", "gram",
                              "--params", str(path), "--shards", str(tmp_path / "shards"), "--models",
                              str(tmp_path / "models")], cwd=REPO, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = stage.communicate(timeout=240)
    except subprocess.TimeoutExpired:  # the old behaviour: Ray Train waits for a CPU that never comes
        os.killpg(stage.pid, 9)
        stage.communicate()
        pytest.fail("the stage was still waiting for resources after 240 s")
    assert stage.returncode != 0
    assert f"train.ray.workers={(os.cpu_count() or 1) + 1} needs" in output


@pytest.mark.parametrize("auth_mode", [None, "token"])  # Ray's default for a local instance; what pipelines.repro sets
def test_the_local_ray_refuses_a_client_without_its_token(tmp_path, auth_mode):
    script = (
        "import os, subprocess, sys\n"
        "from pipelines.ray_session import ray_session\n"
        "with ray_session():\n"
        # RAY_gcs_server_port_wait_time_s: the refused client gives up after 3 connection attempts, not Ray's 20
        "    env = {**os.environ, 'RAY_AUTH_MODE': 'token', 'RAY_AUTH_TOKEN': 'not-the-token',\n"
        "           'RAY_gcs_server_port_wait_time_s': '3'}\n"
        "    probe = 'import ray, sys\\ntry:\\n    ray.init(address=sys.argv[1], log_to_driver=False)\\n'"
        " + '    print(\"CONNECTED\")\\nexcept Exception as error:\\n    print(\"REFUSED\", type(error).__name__)\\n'\n"
        "    out = subprocess.run([sys.executable, '-c', probe, os.environ['RAY_ADDRESS']], env=env, capture_output=True,"
        " text=True, timeout=120)\n"
        "    print('ADDRESS', os.environ['RAY_ADDRESS'], 'PROBE', out.stdout.strip())\n"
        # the control: the same client with the session's own token connects within the same 3 attempts
        "    env = {**os.environ, 'RAY_gcs_server_port_wait_time_s': '3'}\n"
        "    out = subprocess.run([sys.executable, '-c', probe, os.environ['RAY_ADDRESS']], env=env, capture_output=True,"
        " text=True, timeout=120)\n"
        "    print('CONTROL', out.stdout.strip())\n")
    env = {key: value for key, value in os.environ.items() if key not in ("RAY_ADDRESS", "STYLECORE_LOCAL_RAY",
                                                                       "RAY_AUTH_MODE")}
    if auth_mode is not None:
        env["RAY_AUTH_MODE"] = auth_mode
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert "ADDRESS 127.0.0.1:" in done.stdout, done.stdout + done.stderr
    # chosen explicitly, Ray keeps its "enabled by default … set RAY_AUTH_MODE=disabled to opt out" warning to itself
    assert ("Token authentication is enabled" in done.stderr) == (auth_mode is None), done.stderr[-2000:]
    assert "PROBE REFUSED" in done.stdout and "PROBE CONNECTED" not in done.stdout, done.stdout + done.stderr[-2000:]
    assert "CONTROL CONNECTED" in done.stdout, done.stdout + done.stderr[-2000:]


# ---------------------------------------------------------------------------------------------------
# Stylization: the CLI and Ray Data


def test_stylize_checks_every_argument_before_the_model_loads(tmp_path, capsys):
    save_image(synthetic_photo(0, 32), tmp_path / "photo.png")
    save_image(synthetic_artwork(0, "waves", 32), tmp_path / "style.png")
    (tmp_path / "taken").write_text("a file where the output folder should go")
    nowhere = str(tmp_path / "no-such-checkpoint")
    common = ["stylize", "--model", nowhere, "--content", str(tmp_path / "photo.png"), "--quiet"]
    assert cli(common + ["--style", str(tmp_path / "style.png"), "--output", str(tmp_path / "taken")]) == 2
    assert "is a file" in capsys.readouterr().err
    assert cli(common + ["--style", str(tmp_path / "style.png"), "--style-weights", "0.3", "0.7",
                         "--output", str(tmp_path / "out")]) == 2
    assert "2 weight(s) for 1 style(s)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_photo_over_the_pixel_budget_is_tiled_automatically(tmp_path):
    from stylecore.stylize import Stylizer

    checkpoint = _checkpoint_run(tmp_path)
    import stylecore

    model = stylecore.load(checkpoint)
    content, style = torch.rand(3, 96, 160), torch.rand(3, 48, 48)
    budget = Stylizer(model, max_pixels=64 * 64)  # 96×160 is over it: tiles of 64, as if --max-side 64
    assert torch.equal(budget(content, style), Stylizer(model, max_side=64)(content, style))
    assert budget(content, style).shape == content.shape
    whole = Stylizer(model, max_pixels=None)(content, style)
    assert not torch.equal(whole, budget(content, style))  # it really tiled


def test_hostile_shard_keys_are_listed_as_rejects_and_nothing_lands_outside_the_output(tmp_path, local_ray):
    from pipelines.stylize_dataset import stylize_dataset

    checkpoint = _checkpoint_run(tmp_path)
    image = corpus._encode(corpus._gradient((40, 32)), "JPEG")
    good = ["photo-a", "photo-b", "nested/photo-c"]
    shard_folder = tmp_path / "shards"
    hostile = corpus.hostile_keys(tmp_path)
    corpus.shard_with_keys(shard_folder / "hostile-000000.tar", good + hostile, image)
    save_image(synthetic_artwork(0, "waves", 32), tmp_path / "styles" / "waves.png")
    before = _tree(tmp_path)
    for output_format in ("files", "webdataset"):
        output = tmp_path / "deep" / "er" / output_format
        manifest = stylize_dataset(shard_folder, tmp_path / "styles", str(checkpoint), output, style_size=32,
                                   batch_size=4, actors=1, output_format=output_format, progress=False)
        assert manifest["written"] == len(good)
        refused = {r["key"]: r["reason"] for r in manifest["rejected"]}
        assert set(refused) == set(hostile) and all("unsafe key" in r for r in refused.values())
        if output_format == "webdataset":
            for shard in output.glob("*.tar"):
                with tarfile.open(shard) as tar:
                    assert all(m.name.split(".")[0] in good or m.name.rsplit(".", 1)[0] in good for m in tar)
    outside = _tree(tmp_path) - before
    assert all(path.startswith("deep/er/") or path in ("deep", "deep/er") for path in outside), sorted(outside)
    assert not (tmp_path / "absolute-escape.jpg").exists()
    json.dumps(manifest)  # the manifest (with the hostile keys in it) is still valid JSON


def test_a_killed_driver_leaves_no_ray_process_behind(tmp_path):
    """kill -9 of the driver alone (not its process group): Ray's reaper stopped the raylet and the GCS, but
    their agents stayed alive forever. The watchdog ray_session starts ends them."""
    script = ("import os, time\nfrom pipelines.ray_session import ray_session\nwith ray_session():\n"
              "    print('UP', os.environ['RAY_ADDRESS'], flush=True)\n    time.sleep(600)\n")
    env = {key: value for key, value in os.environ.items() if key not in ("RAY_ADDRESS", "STYLECORE_LOCAL_RAY")}
    driver = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    line = driver.stdout.readline()
    while line and not line.startswith("UP "):
        line = driver.stdout.readline()
    address = line.split()[1]
    from pipelines.ray_watchdog import leftovers

    assert leftovers(address), "the instance's processes are found by their environment"
    driver.kill()
    driver.wait()
    deadline = __import__("time").monotonic() + 60
    while leftovers(address) and __import__("time").monotonic() < deadline:
        __import__("time").sleep(1)
    assert not leftovers(address), [p.info["name"] for p in leftovers(address)]

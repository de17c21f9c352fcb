import json
import subprocess
import sys

import torch

import stylecore.losses as losses
import stylecore.models as models
from stylecore.cli import main
from stylecore.data import load_image, save_image
from stylecore.synthetic import synthetic_artwork, synthetic_photo


def test_list_shows_every_model_and_loss_with_its_description(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert out.index("models:") < out.index("losses:")
    for name in models.names():
        assert f"  {name} " in out and models.describe(name)[:30] in out
    for name in losses.names():
        assert f"  {name} " in out and losses.describe(name)[:30] in out


def test_train_then_stylize_from_generated_inputs(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--model", "adain", "--style-loss", "balanced_gram", "--content", "synthetic:photos:8",
            "--style", "synthetic:artworks:5", "--steps", "3", "--batch-size", "2", "--size", "32", "--weights",
            "random:0", "--sample-every", "3", "--objective", "style=2", "--output", str(run), "--quiet"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "random:0 (pretrained: false)" in out and "step 3:" in out
    assert (run / "step-000003" / "model.safetensors").is_file() and (run / "samples" / "step-000003.png").is_file()
    config = json.loads((run / "step-000003" / "config.json").read_text())
    assert config["train"]["style_loss"] == "balanced_gram" and config["train"]["objective"] == {"style": 2}

    assert main(args) == 0  # already done: resumes at step 3 and trains nothing
    assert "nothing to do" in capsys.readouterr().out

    save_image(synthetic_photo(1, 48)[:, :, :40], tmp_path / "content" / "photo.png")
    save_image(synthetic_artwork(2, "dots", 40), tmp_path / "dots.png")
    save_image(synthetic_artwork(3, "waves", 40), tmp_path / "waves.png")
    assert main(["stylize", "--model", str(run), "--content", str(tmp_path / "content"), "--style",
                 str(tmp_path / "dots.png"), str(tmp_path / "waves.png"), "--style-weights", "0.25", "0.75",
                 "--alpha", "0.8", "--preserve-color", "luminance", "--output", str(tmp_path / "out"), "--quiet"]) == 0
    result = load_image(tmp_path / "out" / "photo.jpg")
    assert result.shape == (3, 48, 40)


def test_cli_errors_name_the_problem(tmp_path, capsys):
    assert main(["train", "--model", "adian", "--content", "synthetic:photos", "--style", "synthetic:artworks",
                 "--output", str(tmp_path / "x")]) == 2
    assert "unknown model 'adian'" in capsys.readouterr().err
    assert main(["train", "--content", str(tmp_path / "nope"), "--style", "synthetic:artworks",
                 "--output", str(tmp_path / "x"), "--weights", "random:0"]) == 2
    assert "does not exist" in capsys.readouterr().err
    save_image(synthetic_photo(1, 32), tmp_path / "c.png")
    assert main(["stylize", "--model", str(tmp_path), "--content", str(tmp_path / "c.png"), "--style",
                 str(tmp_path / "c.png"), "--output", str(tmp_path / "out")]) == 2
    assert "not a stylecore checkpoint" in capsys.readouterr().err


def test_console_script_is_installed():
    result = subprocess.run([sys.executable, "-m", "stylecore.cli", "list"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "balanced_gram" in result.stdout


def test_check_losses_writes_a_report_with_finite_values_and_explains_skips(tmp_path, capsys):
    report_path = tmp_path / "reports" / "losses.json"
    assert main(["check-losses", "--size", "32", "--batch-size", "2", "--output", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert report["encoder"]["weights"] == "random:0" and report["encoder"]["pretrained"] == "false"
    assert set(report["losses"]) | set(report["skipped"]) == set(losses.names())
    assert {"content", "gram", "balanced_gram", "mean_std", "moments", "remd", "strotss", "tv"} <= set(report["losses"])
    for name in ("content", "gram", "balanced_gram", "mean_std", "moments", "self_similarity"):
        entry = report["losses"][name]
        assert entry["value"] > 0 and entry["mean_abs_grad"] > 0, name
        assert abs(entry["value_when_output_equals_targets"]) < 1e-6, name
    assert all(reason for reason in report["skipped"].values())
    assert not list(report_path.parent.glob(".*.tmp"))  # the atomic write left no temporary file


def test_train_streams_shard_folders(tmp_path, capsys):
    from stylecore.shards import SourceItem, prepare_image, write_shards

    for name, family in (("content", None), ("style", "dots")):
        raw = tmp_path / f"raw-{name}"
        items = []
        for i in range(8):
            image = synthetic_photo(i, 48) if family is None else synthetic_artwork(i, family, 48)
            save_image(image, raw / f"{i}.png")
            items.append(SourceItem(f"{i}.png"))
        write_shards((prepare_image(raw, item, name, "train", 48, 90, 16, 10**7) for item in items),
                     tmp_path / name, name, maxcount=4)
    run = tmp_path / "run"
    assert main(["train", "--content", str(tmp_path / "content"), "--style", str(tmp_path / "style"), "--steps", "2",
                 "--batch-size", "2", "--size", "32", "--weights", "random:0", "--flip", "--output", str(run),
                 "--quiet"]) == 0
    assert "step 2:" in capsys.readouterr().out
    trainer_state = torch.load(run / "step-000002" / "trainer.pt", weights_only=True)
    assert trainer_state["data"] == {"position": 2, "seed": 0}  # the stream's position is checkpointed

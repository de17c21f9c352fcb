import json
import subprocess
import sys

import stylecore.losses as losses
from stylecore.cli import main


def test_list_shows_every_loss_with_its_description(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in losses.names():
        assert f"  {name} " in out and losses.describe(name)[:30] in out


def test_console_script_is_installed():
    result = subprocess.run([sys.executable, "-m", "stylecore.cli", "list"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "balanced_gram" in result.stdout


def test_check_losses_writes_a_report_with_finite_values_and_explains_skips(tmp_path, capsys):
    report_path = tmp_path / "reports" / "losses.json"
    assert main(["check-losses", "--size", "32", "--batch", "2", "--output", str(report_path)]) == 0
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

"""Optimisation over datasets with Ray (stylecore optimize-dataset) on a real local Ray: every content × style pair
once, equal to the same method run in one process, and a run killed halfway that resumes without duplicates."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")

from pipelines.optimize_dataset import optimize_dataset  # noqa: E402
from pipelines.stylize_inputs import StylizeError, decode_resize  # noqa: E402
from stylecore import optimize  # noqa: E402
from stylecore.data import load_image, save_image  # noqa: E402
from stylecore.synthetic import STYLE_FAMILIES, synthetic_artwork, synthetic_photo  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
PHOTOS, STYLES = 6, 2
#: small and exact: fp32 (the in-process reference runs with other thread counts), a few L-BFGS steps
GATYS = {"size": 32, "steps": 4, "encoder_weights": "random:0", "precision": "fp32"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("optimize")
    for index in range(PHOTOS):
        save_image(synthetic_photo(index, 32), root / "photos" / f"photo{index}.png")
    (root / "photos" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a JPEG")  # recorded with why, not fatal
    for index, family in enumerate(STYLE_FAMILIES[:STYLES]):
        save_image(synthetic_artwork(index, family, 40), root / "styles" / f"{family}.png")
    return root


def _written_keys(output: Path) -> list[str]:
    """Every output key the part records commit (a key twice would be a duplicate)."""
    return [item["key"] for part in (output / "_parts").glob("*.json")
            for item in json.loads(part.read_text())["written"]]


def test_every_pair_is_optimised_once_as_the_method_does_in_one_process(inputs, local_ray):
    output = inputs / "out"
    manifest = optimize_dataset(inputs / "photos", inputs / "styles", "gatys", output, GATYS, policy="all",
                                style_size=40, actors=2, output_format="files", image_format="png", progress=False)
    expected = {f"photo{i}/{family}" for i in range(PHOTOS) for family in STYLE_FAMILIES[:STYLES]}
    assert {item["key"] for item in manifest["outputs"]} == expected and sorted(_written_keys(output)) == sorted(expected)
    assert manifest["expected"] == (PHOTOS + 1) * STYLES and not manifest["missing"]
    assert {r["key"] for r in manifest["rejected"]} == {f"broken/{family}" for family in STYLE_FAMILIES[:STYLES]}
    assert all(r["reason"].startswith("unreadable") for r in manifest["rejected"])
    assert manifest["method"]["encoder"]["weights"] == "random:0" and manifest["method"]["settings"]["steps"] == 4
    method = optimize.build("gatys", device="cpu", **GATYS)
    for item in manifest["outputs"][:3]:
        content = decode_resize((inputs / "photos" / f"{item['source']}.png").read_bytes(), None).float() / 255
        style = decode_resize((inputs / "styles" / f"{item['style']}.png").read_bytes(), None).float() / 255
        reference = method.run(content[None], style[None])
        written = load_image(output / item["file"])
        assert (written - reference.image[0]).abs().max() <= 2 / 255  # PNG rounding, nothing else
        # each record carries the objective at the first and the last step, and the run lowered it
        assert item["losses"]["last"]["total"] < item["losses"]["first"]["total"]
        assert item["losses"]["last"]["total"] == pytest.approx(reference.scales[-1].last["total"], rel=1e-3)


def test_a_run_killed_halfway_resumes_with_no_duplicates_and_no_gaps(inputs, local_ray):
    output = inputs / "killed"
    settings = {**GATYS, "steps": 30}  # seconds per pair: the kill lands mid-run
    script = (f"from pipelines.optimize_dataset import optimize_dataset; optimize_dataset({str(inputs / 'photos')!r}, "
              f"{str(inputs / 'styles')!r}, 'gatys', {str(output)!r}, {settings!r}, policy='all', style_size=40, "
              "actors=2, output_format='files', image_format='png', progress=False)")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    process = subprocess.Popen([sys.executable, "-c", script], env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not (output / "_parts").is_dir() or not _written_keys(output):  # (the broken input's record is no pair)
        assert process.poll() is None, "the run ended before any pair was committed"
        assert time.monotonic() < deadline, "no pair was committed within 240 s"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the driver, its Ray and the actors: a crash mid-run
    process.wait()
    assert not (output / "manifest.json").exists()
    before = set(_written_keys(output))
    assert 0 < len(before) < PHOTOS * STYLES

    manifest = optimize_dataset(inputs / "photos", inputs / "styles", "gatys", output, settings, policy="all",
                                style_size=40, actors=2, output_format="files", image_format="png", progress=False)
    keys = _written_keys(output)
    assert len(keys) == len(set(keys)) == PHOTOS * STYLES  # no duplicates, no gaps
    assert manifest["this_run"]["written"] <= PHOTOS * STYLES - len(before)  # the committed pairs were kept
    assert all((output / item["file"]).is_file() for item in manifest["outputs"])


def test_bad_settings_fail_before_ray_starts_and_name_the_fix(inputs, tmp_path):
    with pytest.raises(StylizeError, match=r"method gatys: .*steps"):
        optimize_dataset(inputs / "photos", inputs / "styles", "gatys", tmp_path / "a", {"steps": 0}, policy="all")
    with pytest.raises(StylizeError, match=r"method gatz: .*gatys"):
        optimize_dataset(inputs / "photos", inputs / "styles", "gatz", tmp_path / "b", {}, policy="all")
    with pytest.raises(StylizeError, match=r"no key.*photo99"):
        optimize_dataset(inputs / "photos", inputs / "styles", "gatys", tmp_path / "c", GATYS, policy="all",
                         input_keys=["photo1", "photo99"])
    assert not (tmp_path / "a").exists() and not (tmp_path / "c" / "manifest.json").exists()


def test_the_command_line_runs_and_refuses_a_flag_the_method_does_not_take(inputs, tmp_path, local_ray, capsys):
    from stylecore.cli import main

    command = ["optimize-dataset", "--method", "strotss", "--content", str(inputs / "photos"), "--style",
               str(inputs / "styles"), "--output", str(tmp_path / "out")]
    assert main(command + ["--optimizer", "adam"]) == 2
    assert "--method strotss takes no --optimizer" in capsys.readouterr().err
    assert main(command + ["--policy", "one", "--size", "16", "--steps", "2", "--weights", "random:0", "--limit", "3",
                           "--quiet", "--actors", "1"]) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["written"] == 2 and manifest["method"]["settings"]["method"] == "strotss"
    assert [r["key"] for r in manifest["rejected"]] == ["broken"]  # key order: broken, photo0, photo1
    assert sorted(path.name for path in (tmp_path / "out").glob("*.png")) == ["photo0.png", "photo1.png"]
    assert "weights random:0 (pretrained: false)" in capsys.readouterr().out

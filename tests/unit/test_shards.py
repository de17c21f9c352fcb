import json

import pytest
import torch

from stylecore.data import Augment, PairStream, ShardPairStream, SyntheticImages, save_image, seeded_generator
from stylecore.shards import (ShardImages, SourceItem, is_shard_location, prepare_image, sample_key, shard_urls,
                              write_shards)
from stylecore.synthetic import STYLE_FAMILIES, synthetic_artwork


@pytest.fixture(scope="module")
def style_shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    items = []
    for i in range(24):
        family = STYLE_FAMILIES[i % 5]
        save_image(synthetic_artwork(i, family, 72), root / f"{family}/{i:03d}.png")
        items.append(SourceItem(f"{family}/{i:03d}.png", {"style": family}))
    out = tmp_path_factory.mktemp("shards") / "demo-train"
    results = (prepare_image(root, item, "demo", "train", 64, 90, 32, 10**7) for item in items)
    manifest = write_shards(results, out, "demo-train", maxcount=6)
    return out, manifest


def test_keys_are_stable_dot_free_and_distinct():
    assert sample_key("a/b.c/photo.jpg") == sample_key("a/b.c/photo.jpg")
    assert "." not in sample_key("a/b.c/photo.jpg")
    assert sample_key("x/a_b.jpg") != sample_key("x/a/b.jpg")  # same sanitised stem, different paths


def test_shards_hold_every_sample_once_with_schema_and_manifest(style_shards):
    out, manifest = style_shards
    assert [s["samples"] for s in manifest["shards"]] == [6, 6, 6, 6]
    assert manifest["per_label"]["style"] == {f: 24 // 5 + (1 if i < 24 % 5 else 0) for i, f in enumerate(STYLE_FAMILIES)}
    assert is_shard_location(out) and is_shard_location(out / "manifest.json") and not is_shard_location(out.parent)
    images = ShardImages(out)
    assert len(images) == 24 and len({images[i][0] for i in range(24)}) == 24
    meta = images.metadata(0)
    assert meta["source"] == "demo" and meta["split"] == "train" and meta["original_size"] == [72, 72]
    assert meta["stored_size"] == [64, 64] and meta["labels"]["style"] in STYLE_FAMILIES
    with pytest.raises(FileNotFoundError, match="no shard folder"):
        shard_urls(out.parent)


def test_shard_members_have_one_plain_header_each(style_shards):
    """No PAX extended headers (a float mtime makes tarfile write one per member: three header blocks instead of
    one, and twice the header parsing for every sample a loader reads); the fixed mtime keeps reruns identical."""
    import tarfile

    out, _ = style_shards
    for shard in sorted(out.glob("*.tar")):
        with tarfile.open(shard) as tar:
            members = tar.getmembers()
        assert members and all(not m.pax_headers and m.mtime == 0 and m.isfile() for m in members)
        # each member: one 512-byte header and its data padded to 512; then the end-of-archive blocks
        assert members[-1].offset_data + members[-1].size <= shard.stat().st_size
        assert all(m.offset_data == m.offset + 512 for m in members)


def test_shard_pair_stream_yields_augmented_batches_and_ranks_read_their_own_shards(style_shards, monkeypatch):
    out, _ = style_shards
    stream = ShardPairStream(out, out, batch_size=3, crop_size=32, load_size=48, seed=0, flip=True)
    batches = [b for _, b in zip(range(4), stream)]
    assert batches[0].content.shape == (3, 3, 32, 32) and batches[0].style.shape == (3, 3, 32, 32)
    assert stream.state_dict()["position"] == 4
    seen = {}
    for rank in (0, 1, 0):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        ranked = ShardPairStream(out, out, batch_size=4, crop_size=32, seed=0)
        keys = [key for _, batch in zip(range(6), ranked) for key in batch.content_keys]
        assert seen.setdefault(rank, keys) == keys  # a rerun reads the same sequence (reproducible training)
    # Resampled shards: each rank draws its own sequence of shards, endlessly (equal counts).
    assert len(seen[0]) == len(seen[1]) == 24 and seen[0] != seen[1]


def test_loader_workers_hand_over_their_lanes_in_order_reproducibly_and_resume_from_the_position(style_shards):
    out, _ = style_shards
    settings = dict(batch_size=3, crop_size=32, load_size=48, seed=0, flip=True, workers=2)
    stream = ShardPairStream(out, out, **settings)
    batches = [b for _, b in zip(range(6), stream)]
    assert stream.state_dict()["position"] == 6 and batches[0].content.shape == (3, 3, 32, 32)
    # worker w reads lane w + 1: batches 0, 2, 4 are lane 1's first three, batches 1, 3, 5 lane 2's
    lanes = [[b for _, b in zip(range(3), ShardPairStream(out, out, **settings).batches(0, lane))] for lane in (1, 2)]
    for index, batch in enumerate(batches):
        expected = lanes[index % 2][index // 2]
        assert torch.equal(batch.content, expected.content) and batch.style_keys == expected.style_keys
    again = [b for _, b in zip(range(6), ShardPairStream(out, out, **settings))]  # the same run again: the same data
    assert all(torch.equal(a.content, b.content) for a, b in zip(batches, again))
    resumed = ShardPairStream(out, out, **settings)
    resumed.load_state_dict({"position": 4, "seed": 0})
    first = next(iter(resumed))
    assert torch.equal(first.content, next(ShardPairStream(out, out, **settings).batches(4, 1)).content)
    assert resumed.state_dict()["position"] == 5
    with pytest.raises(ValueError, match="loader workers must be an integer"):
        ShardPairStream(out, out, batch_size=3, crop_size=32, workers=-1)
    iterator = iter(ShardPairStream(out, out, **settings))
    next(iterator)
    iterator.close()  # a trainer that stops ends its loader threads with it
    import threading

    assert not [t for t in threading.enumerate() if t.name.startswith("stylecore-loader")]


def test_augment_is_deterministic_per_generator_and_style_jitter_changes_colour():
    image = synthetic_artwork(0, "waves", 96)
    augment = Augment(64, 80, flip=True, style_jitter=True)
    a = augment(image, seeded_generator(1, 2), style=True)
    b = augment(image, seeded_generator(1, 2), style=True)
    assert torch.equal(a, b) and a.shape == (3, 64, 64) and 0 <= a.min() and a.max() <= 1
    plain = Augment(64, 80)(image, seeded_generator(1, 2))
    assert plain.shape == (3, 64, 64)
    with pytest.raises(ValueError, match="load_size"):
        Augment(64, 32)


def test_pair_stream_ranks_draw_different_batches():
    content, style = SyntheticImages("photos", 8, 48), SyntheticImages("artworks", 8, 48)
    r0 = PairStream(content, style, 2, 32, rank=0, world_size=2).batch(0)
    r1 = PairStream(content, style, 2, 32, rank=1, world_size=2).batch(0)
    assert not torch.equal(r0.content, r1.content)


def test_large_jpegs_are_decoded_at_reduced_scale_and_exif_rotation_is_applied(tmp_path):
    from PIL import Image

    Image.new("RGB", (400, 320), (200, 10, 10)).save(tmp_path / "big.jpg", quality=95)
    rotated = Image.new("RGB", (120, 80), (10, 200, 10))
    exif = rotated.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    rotated.save(tmp_path / "rotated.jpg", exif=exif)
    big = prepare_image(tmp_path, SourceItem("big.jpg"), "s", "train", 64, 90, 32, 10**7)
    assert big.meta["original_size"] == [400, 320] and big.meta["stored_size"] == [80, 64]
    turned = prepare_image(tmp_path, SourceItem("rotated.jpg"), "s", "train", 64, 90, 32, 10**7)
    assert turned.meta["stored_size"] == [64, 96]  # portrait after the EXIF rotation, short side 64


def test_several_shard_folders_read_as_one_set_and_a_skipped_folder_says_why(style_shards, tmp_path):
    out, manifest = style_shards
    skipped = tmp_path / "places365-train"
    skipped.mkdir()
    (skipped / "manifest.json").write_text(json.dumps({"skipped": "not in profile 'demo'", "shards": []}))
    assert shard_urls([out, skipped]) == shard_urls(out)  # the skipped folder adds nothing and is no error
    assert len(shard_urls([out, out])) == 2 * len(manifest["shards"])
    with pytest.raises(FileNotFoundError, match="not in profile 'demo'.*params.yaml: profile"):
        shard_urls([skipped])


def test_a_label_filter_streams_one_domain_and_names_the_labels_there_are(style_shards):
    out, manifest = style_shards
    stream = ShardPairStream(out, out, batch_size=4, crop_size=32, seed=0, style_labels={"style": "dots"})
    keys = [key for _, batch in zip(range(5), stream) for key in batch.style_keys]
    images = ShardImages(out)
    family = {images[i][0]: images.metadata(i)["labels"]["style"] for i in range(len(images))}
    assert len(keys) == 20 and {family[key] for key in keys} == {"dots"}
    # the content side is not filtered: every family turns up there
    contents = {family[key] for _, batch in zip(range(5), ShardPairStream(
        out, out, batch_size=4, crop_size=32, seed=0, style_labels={"style": "dots"})) for key in batch.content_keys}
    assert len(contents) > 1
    two = ShardPairStream(out, out, batch_size=4, crop_size=32, seed=0, style_labels={"style": ["dots", "waves"]})
    assert {family[key] for _, batch in zip(range(5), two) for key in batch.style_keys} == {"dots", "waves"}
    with pytest.raises(ValueError, match=r"no sample of .* has style = cubism; its values are checks, dots, noise"):
        ShardPairStream(out, out, batch_size=4, crop_size=32, style_labels={"style": "cubism"})
    with pytest.raises(ValueError, match=r"have no label 'artist'; their labels are style"):
        ShardPairStream(out, out, batch_size=4, crop_size=32, style_labels={"artist": "x"})


@pytest.mark.parametrize("stored,load,crop", [((256, 341), 512, 256), ((128, 128), 80, 64), ((96, 160), 96, 64)])
def test_the_crop_is_cut_before_the_resize_and_shows_what_resize_then_crop_shows(stored, load, crop):
    import math

    from stylecore.data import resize_short_side

    artwork = synthetic_artwork(3, "dots", max(stored))[:, :stored[0], :stored[1]]  # sharp edges: shifts show
    step = math.ceil(load / min(stored))  # one pixel of the coarser grid, in resized pixels
    for seed in range(4):
        cropped = Augment(crop, load)(artwork, seeded_generator("crop", seed))
        # the reference order, with the same draws (Augment.batch: eight uniforms an image, top and left the 2nd
        # and 3rd as fractions of the free room): the whole image resized, then the window cut
        generator, whole = seeded_generator("crop", seed), resize_short_side(artwork, load)
        draws = torch.rand(1, 8, generator=generator)[0].tolist()
        top, left = int(draws[1] * (whole.shape[1] - crop + 1)), int(draws[2] * (whole.shape[2] - crop + 1))
        reference = whole[:, top:top + crop, left:left + crop]
        assert cropped.shape == reference.shape == (3, crop, crop)
        if load == min(stored):  # nothing to resize: the very same pixels
            assert torch.equal(cropped, reference)
            continue
        # the same view: closer to it than the reference is to itself moved by one pixel of the coarser grid
        moved = left + step if left + step <= whole.shape[2] - crop else left - step
        one_pixel_off = (whole[:, top:top + crop, moved:moved + crop] - reference).abs().mean()
        assert (cropped - reference).abs().mean() < one_pixel_off, seed


@pytest.mark.parametrize("load", [128, 160])
def test_uint8_pixels_give_the_crops_their_float_image_gives(load):
    """The loader hands Augment decoded uint8 pixels and converts only the crop: the batch equals the float image's,
    whatever mix of the two a batch holds."""
    float_images = [synthetic_artwork(i, "dots", 128)[:, :128, :(128 + 40 * i)] for i in range(3)]
    pixels = [image.mul(255).round().byte() for image in float_images]
    as_floats = [image.float() / 255 for image in pixels]
    augment = Augment(96, load, flip=True)
    from_pixels = augment.batch(pixels, seeded_generator("u8", load))
    from_floats = augment.batch(as_floats, seeded_generator("u8", load))
    mixed = augment.batch([pixels[0], as_floats[1], pixels[2]], seeded_generator("u8", load))
    assert from_pixels.dtype == torch.float32 and from_pixels.shape == (3, 3, 96, 96)
    assert 0 <= float(from_pixels.min()) and float(from_pixels.max()) <= 1
    # converting before or after the cut is the same arithmetic on the same values, resampled or not
    assert torch.equal(from_pixels, from_floats) and torch.equal(mixed, from_floats)


@pytest.mark.parametrize("workers", [0, 2])
def test_decoding_each_batch_on_the_training_device_gives_the_loader_sides_batches(style_shards, workers):
    """jpeg_decode: device hands the batch's JPEG bytes to the device's decoder (nvJPEG on a GPU) and crops there;
    on the CPU it is the same libjpeg-turbo, so the batches must be the loader side's exactly: same samples, same
    crops, same order, inline or from loader threads."""
    out, _ = style_shards
    settings = dict(batch_size=3, crop_size=32, load_size=48, seed=5, flip=True, style_jitter=True, workers=workers)
    loader_side = [b for _, b in zip(range(4), ShardPairStream(out, out, **settings))]
    on_device = [b for _, b in zip(range(4), ShardPairStream(out, out, decode_device="cpu", **settings))]
    for a, b in zip(loader_side, on_device):
        assert a.content_keys == b.content_keys and a.style_keys == b.style_keys
        assert torch.equal(a.content, b.content) and torch.equal(a.style, b.style)


def test_jpeg_decode_is_checked_and_names_the_fix(style_shards):
    from stylecore.config import ConfigError, DataConfig, from_mapping

    out, _ = style_shards
    with pytest.raises(ConfigError, match=r"jpeg_decode.*one of loader, device"):
        from_mapping(DataConfig, {"jpeg_decode": "gpu"}, "data config")
    device_side = DataConfig(batch_size=2, crop_size=32, jpeg_decode="device")
    with pytest.raises(ConfigError, match="names no device: set jpeg_decode: loader"):
        device_side.stream(out, out, seed=0)
    with pytest.raises(ConfigError, match=r"reads indexed images .*: set jpeg_decode: loader"):
        device_side.stream(out, out, seed=0, in_memory=True, device="cpu")
    stream = device_side.stream(out, out, seed=0, device=torch.device("cpu"))
    assert stream.decode_device == torch.device("cpu") and not stream.pin_memory
    assert next(iter(stream)).content.shape == (2, 3, 32, 32)

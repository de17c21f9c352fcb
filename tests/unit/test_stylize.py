import pytest
import torch
from PIL import Image

from stylecore import functional as SF
from stylecore.data import ImageLoadError, load_image, save_image
from stylecore.stylize import Stylizer, _ramp, _tile_starts, preserve_luminance

from model_helpers import images, offline_model


@pytest.fixture(scope="module")
def adain():
    return offline_model("adain")


def test_stylizer_is_deterministic_and_matches_the_model(adain):
    content, style = images(1, 40, 56, 1)[0], images(1, 48, 48, 2)[0]
    stylizer = Stylizer(adain)
    first, second = stylizer(content, style), stylizer(content, style)
    assert torch.equal(first, second) and first.shape == (3, 40, 56)
    with torch.no_grad():
        expected = adain(content[None], style[None]).clamp(0, 1)[0]
    torch.testing.assert_close(first, expected)


def test_a_list_of_contents_of_mixed_sizes_comes_back_in_order(adain):
    stylizer = Stylizer(adain, batch_size=2)
    contents = [images(1, 32, 32, i)[0] for i in range(3)] + [images(1, 40, 24, 9)[0]]
    style = images(1, 32, 32, 7)[0]
    outputs = stylizer(contents, style)
    assert [tuple(o.shape) for o in outputs] == [(3, 32, 32)] * 3 + [(3, 40, 24)]
    for content, output in zip(contents, outputs):
        torch.testing.assert_close(output, stylizer(content, style), rtol=1e-5, atol=1e-6)


def test_style_weights_one_zero_equal_the_single_style(adain):
    stylizer = Stylizer(adain)
    content, s1, s2 = images(1, 32, 32, 1)[0], images(1, 32, 32, 2)[0], images(1, 40, 40, 3)[0]
    torch.testing.assert_close(stylizer(content, [s1, s2], weights=[1.0, 0.0]), stylizer(content, s1))


def test_luminance_preservation_keeps_the_contents_chroma():
    stylized, content = torch.rand(2, 3, 8, 8) * 0.2 + 0.4, torch.rand(2, 3, 8, 8) * 0.2 + 0.4
    out = preserve_luminance(stylized, content)
    yuv_out, yuv_content, yuv_stylized = (SF.rgb_to_yuv(x) for x in (out, content, stylized))
    inside = (out > 0) & (out < 1)  # where no clamp touched the result
    assert inside.all()
    torch.testing.assert_close(yuv_out[:, 0], yuv_stylized[:, 0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(yuv_out[:, 1:], yuv_content[:, 1:], rtol=1e-4, atol=1e-5)


def test_coral_preservation_recolours_the_style_to_the_content_first(adain):
    content, style = images(1, 32, 32, 1)[0], images(1, 32, 48, 2)[0]
    out = Stylizer(adain, preserve_color="coral")(content, style)
    recoloured = SF.coral(style[None], content[None])
    with torch.no_grad():
        expected = adain.stylize(content[None], [adain.style_code(recoloured)]).clamp(0, 1)[0]
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_tiles_cover_the_image_and_blend_weights_never_vanish():
    for length, tile, overlap in [(100, 32, 8), (64, 64, 16), (65, 32, 8), (300, 128, 64)]:
        starts = _tile_starts(length, tile, overlap)
        covered = torch.zeros(length)
        for start in starts:
            covered[start:start + tile] += 1
        assert (covered > 0).all() and starts[-1] + tile == length
        assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))
    ramp = _ramp(32, 8, torch.device("cpu"))
    assert ramp.min() > 0 and ramp[8:24].eq(1).all()


def test_tiled_stylization_keeps_the_size_and_a_single_tile_equals_plain(adain):
    content, style = images(1, 80, 144, 1)[0], images(1, 48, 48, 2)[0]
    tiled = Stylizer(adain, max_side=64, tile_overlap=16)(content, style)
    assert tiled.shape == (3, 80, 144) and torch.isfinite(tiled).all()
    small = images(1, 64, 48, 3)[0]
    torch.testing.assert_close(Stylizer(adain, max_side=64)(small, style), Stylizer(adain)(small, style))


def test_stylizer_rejects_bad_settings(adain):
    with pytest.raises(ValueError, match="preserve_color"):
        Stylizer(adain, preserve_color="yes")
    with pytest.raises(ValueError, match="alpha"):
        Stylizer(adain, alpha=1.5)
    with pytest.raises(ValueError, match="max_side"):
        Stylizer(adain, max_side=8)


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "RGBA", "LA", "I;16", "RGB"])
def test_any_image_mode_loads_as_rgb_in_unit_range(tmp_path, mode):
    rgb = Image.new("RGB", (6, 4), (200, 100, 50))
    if mode == "I;16":
        image = Image.new("I;16", (6, 4), 65535)
    elif mode in ("RGBA", "LA"):
        image = rgb.convert(mode)
        image.putalpha(0)  # fully transparent: composited on white
    else:
        image = rgb.convert(mode)
    path = tmp_path / f"img-{mode.replace(';', '')}.{'tif' if mode in ('I;16', 'CMYK') else 'png'}"
    image.save(path)
    tensor = load_image(path)
    assert tensor.shape == (3, 4, 6) and tensor.dtype == torch.float32
    assert 0 <= tensor.min() and tensor.max() <= 1
    if mode in ("RGBA", "LA", "I;16"):
        assert torch.allclose(tensor, torch.ones_like(tensor))
    if mode == "RGB":
        assert torch.allclose(tensor[:, 0, 0], torch.tensor([200, 100, 50]) / 255)


def test_unreadable_files_get_an_error_naming_them(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image")
    for name in ("empty.jpg", "text.png", "missing.jpg"):
        with pytest.raises(ImageLoadError, match=name):
            load_image(tmp_path / name)


def test_stylize_files_reports_failures_and_skips_what_is_done(adain, tmp_path):
    inputs = tmp_path / "in"
    for i in range(3):
        save_image(images(1, 32, 40, i)[0], inputs / f"c{i}.png")
    (inputs / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    save_image(images(1, 32, 32, 9)[0], tmp_path / "style.png")
    stylizer = Stylizer(adain)
    files = sorted(inputs.iterdir())
    report = stylizer.stylize_files(files, [tmp_path / "style.png"], tmp_path / "out", suffix=".png")
    assert sorted(p.split("/")[-1] for p in report["written"]) == ["c0.png", "c1.png", "c2.png"]
    assert list(report["failed"]) == [str(inputs / "broken.jpg")]
    again = stylizer.stylize_files(files, [tmp_path / "style.png"], tmp_path / "out", suffix=".png")
    assert again["written"] == [] and len(again["skipped"]) == 3
    assert load_image(tmp_path / "out" / "c0.png").shape == (3, 32, 40)


@pytest.mark.parametrize("name", ["adain", "sanet", "linear", "magenta_lite"])
def test_each_content_with_its_own_style_runs_as_one_batch_and_equals_one_at_a_time(name):
    model = offline_model(name)
    stylizer = Stylizer(model, batch_size=4)
    contents = [images(1, 32, 32, i)[0] for i in range(4)] + [images(1, 40, 32, 9)[0]]
    # four different styles of one size, and one of another (spatial codes such as SANet's cannot share a batch)
    styles = [images(1, 32, 32, 20 + i)[0] for i in range(4)] + [images(1, 48, 40, 30)[0]]
    calls = []
    original = model.stylize
    model.stylize = lambda batch, *rest: calls.append(batch.shape[0]) or original(batch, *rest)
    try:
        outputs = stylizer.stylize_each(contents, styles)
    finally:
        del model.stylize
    assert sorted(calls) == [1, 4]  # the four 32² contents together, though each has its own style
    for content, style, output in zip(contents, styles, outputs):
        torch.testing.assert_close(output, stylizer(content, style), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="one style per content"):
        stylizer.stylize_each(contents, styles[:2])


def test_precision_auto_is_fp32_on_cpu_and_bf16_is_close_to_it(adain):
    content, style = images(1, 32, 32, 1)[0], images(1, 32, 32, 2)[0]
    assert Stylizer(adain, precision="auto").precision == "fp32"  # CPU outputs stay the model's own arithmetic
    bf16 = Stylizer(adain, precision="bf16")(content, style)
    fp32 = Stylizer(adain)(content, style)
    assert bf16.dtype == torch.float32 and 0 < (bf16 - fp32).abs().mean() < 0.02
    with pytest.raises(ValueError, match="precision='fp16' is not one of fp32, bf16, auto"):
        Stylizer(adain, precision="fp16")

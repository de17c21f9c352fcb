import numpy as np
import pytest
import torch

from stylecore import functional as SF


def explicit_gram(x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    out = torch.zeros(b, c, c, dtype=torch.float64)
    for k in range(b):
        for i in range(c):
            for j in range(c):
                out[k, i, j] = sum(float(x[k, i, p, q]) * float(x[k, j, p, q]) for p in range(h) for q in range(w))
    return out


@pytest.mark.parametrize("normalize,divisor", [("none", lambda c, h, w: 1), ("hw", lambda c, h, w: h * w),
                                               ("chw", lambda c, h, w: c * h * w)])
def test_gram_against_explicit_sums(normalize, divisor):
    x = torch.randn(2, 3, 4, 5)
    expected = explicit_gram(x) / divisor(3, 4, 5)
    torch.testing.assert_close(SF.gram(x, normalize).double(), expected, rtol=1e-5, atol=1e-6)


def test_gram_is_float32_under_bf16_autocast():
    x = torch.randn(1, 4, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        g = SF.gram(x.bfloat16())
    assert g.dtype == torch.float32


@pytest.mark.parametrize("unbiased", [True, False])
@pytest.mark.parametrize("placement", ["inside", "outside"])
def test_mean_std_against_numpy(unbiased, placement):
    x = torch.randn(2, 3, 5, 4)
    eps = 1e-3
    mean, std = SF.mean_std(x, eps=eps, unbiased=unbiased, eps_placement=placement)
    flat = x.numpy().reshape(2, 3, -1).astype(np.float64)
    var = flat.var(axis=2, ddof=1 if unbiased else 0)
    expected_std = np.sqrt(var + eps) if placement == "inside" else np.sqrt(var) + eps
    np.testing.assert_allclose(mean.squeeze().numpy(), flat.mean(axis=2), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(std.squeeze().numpy(), expected_std, rtol=1e-5)


def test_adain_transfers_the_style_statistics():
    content = torch.randn(2, 4, 8, 8) * 3 + 1
    style = torch.randn(2, 4, 6, 10) * 0.5 - 2
    out = SF.adain(content, style, eps=1e-8)
    out_mean, out_std = SF.mean_std(out, eps=0.0)
    style_mean, style_std = SF.mean_std(style, eps=0.0)
    torch.testing.assert_close(out_mean, style_mean, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out_std, style_std, rtol=1e-4, atol=1e-4)


def test_coral_matches_the_target_mean_and_covariance():
    generator = torch.Generator().manual_seed(0)
    source = 0.5 + 0.1 * torch.randn(1, 3, 32, 32, generator=generator)
    mixing = torch.tensor([[1.0, 0.3, 0.0], [0.2, 0.8, 0.1], [0.0, 0.4, 0.6]])
    target = 0.45 + 0.08 * torch.einsum("ij,bjhw->bihw", mixing, torch.randn(1, 3, 32, 32, generator=generator))
    out = SF.coral(source, target, eps=1e-8)
    assert out.min() > 0 and out.max() < 1  # nothing clamped, so the statistics are exact
    flat_out, flat_target = out.reshape(3, -1).double(), target.reshape(3, -1).double()
    torch.testing.assert_close(flat_out.mean(1), flat_target.mean(1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.cov(flat_out, correction=0), torch.cov(flat_target, correction=0), rtol=1e-3, atol=1e-6)


def test_channel_covariance_against_numpy():
    x = torch.randn(2, 50, 4)
    expected = np.stack([np.cov(x[k].numpy().T, bias=True) for k in range(2)])
    np.testing.assert_allclose(SF.channel_covariance(x).numpy(), expected, rtol=1e-4, atol=1e-6)


def test_cosine_distance_against_explicit_formula():
    a, b = torch.randn(1, 3, 5), torch.randn(1, 4, 5)
    got = SF.cosine_distance(a, b)
    for i in range(3):
        for j in range(4):
            u, v = a[0, i], b[0, j]
            expected = 1 - float(u @ v) / (float(u.norm()) * float(v.norm()))
            assert abs(float(got[0, i, j]) - expected) < 1e-5


def test_hypercolumns_read_pixel_centres_exactly_and_interpolate_coarser_layers():
    fine = torch.randn(1, 2, 4, 4)
    coarse = torch.randn(1, 3, 2, 2)
    # centre of fine pixel (row 1, col 2) in [-1, 1] coordinates, align_corners=False
    x, y = (2 * 2 + 1) / 4 - 1, (2 * 1 + 1) / 4 - 1
    columns = SF.sample_hypercolumns({"fine": fine, "coarse": coarse}, torch.tensor([[[x, y]]]))
    assert columns.shape == (1, 1, 5)
    torch.testing.assert_close(columns[0, 0, :2], fine[0, :, 1, 2])
    # on the coarse grid the point lies at row 0.25, column 0.75 (pixel-centre units): bilinear weights
    c = coarse[0]
    expected = 0.75 * (0.25 * c[:, 0, 0] + 0.75 * c[:, 0, 1]) + 0.25 * (0.25 * c[:, 1, 0] + 0.75 * c[:, 1, 1])
    torch.testing.assert_close(columns[0, 0, 2:], expected)


def test_random_locations_are_seeded_and_in_range():
    a = SF.random_locations(2, 100, torch.Generator().manual_seed(3))
    b = SF.random_locations(2, 100, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == (2, 100, 2) and a.abs().max() <= 1


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        SF.gram(torch.randn(3, 4, 4))
    with pytest.raises(ValueError, match="not one of"):
        SF.gram(torch.randn(1, 3, 4, 4), "frobenius")
    with pytest.raises(ValueError, match="at least 2 positions"):
        SF.mean_std(torch.randn(1, 3, 1, 1))
    with pytest.raises(ValueError, match="agree in batch and channels"):
        SF.adain(torch.randn(1, 3, 4, 4), torch.randn(1, 4, 4, 4))


def test_hand_written_backwards_match_finite_differences():
    x = torch.rand(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    for normalize in ("none", "hw", "chw"):
        assert torch.autograd.gradcheck(lambda t: SF.gram(t, normalize).double(), (x,))
    assert torch.autograd.gradcheck(lambda t: SF.mean_std(t, unbiased=True), (x,))
    flat = torch.rand(2, 3, 7, dtype=torch.float64, requires_grad=True)
    for correction in (0, 1):
        for keep_centred in (False, True):
            assert torch.autograd.gradcheck(lambda t: SF.var_mean(t, correction, keep_centred), (flat,))


def test_the_two_pass_variance_is_as_accurate_as_float64_on_offset_data():
    # E[x²] − E[x]² would lose every digit here (mean 1000, std 0.01): the two passes must not
    generator = torch.Generator().manual_seed(3)
    x = 1000.0 + 0.01 * torch.randn(2, 4, 16, 16, generator=generator, dtype=torch.float64)
    for correction in (0, 1):
        var, mean = SF.var_mean(x.float().reshape(2, 4, -1), correction)
        expected_var, expected_mean = torch.var_mean(x.reshape(2, 4, -1), dim=-1, correction=correction)
        assert torch.allclose(mean.double(), expected_mean, rtol=1e-7)
        assert torch.allclose(var.double(), expected_var, rtol=5e-3)  # float32 rounding of x itself: ~6e-5 / 0.01
        features = x.float().contiguous(memory_format=torch.channels_last).to(torch.bfloat16)
        got_mean, got_std = SF.mean_std(features, eps=0.0, unbiased=bool(correction))
        wanted_var, wanted_mean = torch.var_mean(features.double(), dim=(2, 3), correction=correction, keepdim=True)
        assert torch.allclose(got_mean.double(), wanted_mean, rtol=1e-6)
        assert torch.allclose(got_std.double().square(), wanted_var, rtol=1e-4, atol=1e-12)

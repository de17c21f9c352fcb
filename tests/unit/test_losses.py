import math

import numpy as np
import pytest
import torch

import stylecore.losses as L
from stylecore.losses.transport import relaxed_emd

ISSUE_LOSSES = {"content", "gram", "balanced_gram", "mean_std", "moments", "remd", "self_similarity", "palette",
                "strotss", "tv", "kl", "disentanglement", "sgan", "lsgan", "wgan_gp", "hinge", "cycle", "identity",
                "cam"}
STYLE_LAYERS = ["relu1_2", "relu2_2", "relu3_3", "relu4_3"]


def features(batch=2, scale=1.0, seed=0, size=8, layers=STYLE_LAYERS, channels=(4, 6, 8, 10)):
    """Post-ReLU-like (non-negative) feature maps, halving in size per layer."""
    g = torch.Generator().manual_seed(seed)
    return {layer: scale * torch.rand(batch, c, max(size >> i, 2), max(size >> i, 2), generator=g)
            for i, (layer, c) in enumerate(zip(layers, channels))}


def gram_np(f, divisor):
    flat = f.reshape(f.shape[0], -1).astype(np.float64)
    return flat @ flat.T / divisor


# -- the registry ------------------------------------------------------------------------------

def test_every_loss_of_the_issue_is_registered_with_a_formula_docstring():
    assert ISSUE_LOSSES <= set(L.names())
    for name in L.names():
        description = L.describe(name)
        assert len(description) > 20, name
        assert any(ch in description for ch in "=·Σ‖(²"), f"{name}: docstring has no formula: {description}"


def test_unknown_names_parameters_and_weights_are_refused_clearly():
    with pytest.raises(ValueError, match="unknown loss 'balanced_gramm'. Did you mean 'balanced_gram'"):
        L.build("balanced_gramm")
    with pytest.raises(ValueError, match="unknown parameter.*lambda.*accepts: layers, weight, gram_normalize, eps"):
        L.build("balanced_gram", **{"lambda": 1})
    with pytest.raises(ValueError, match="weight must be a finite number ≥ 0; got -1"):
        L.build("gram", weight=-1)
    with pytest.raises(ValueError, match="weight of layer 'relu1_2' must be a finite number ≥ 0"):
        L.build("gram", layers={"relu1_2": -0.5})
    with pytest.raises(ValueError, match="unknown layer name.*'relu4_5'.*valid names are conv1_1"):
        L.build("gram", layers=["relu4_5"])
    with pytest.raises(ValueError, match=r"not the string 'relu1_1' \(write \['relu1_1'\]\)"):
        L.build("mean_std", layers="relu1_1")


def test_wrong_shapes_are_named():
    loss = L.build("gram", layers=["relu1_2"])
    with pytest.raises(ValueError, match="differ in batch or channels"):
        loss({"relu1_2": torch.rand(2, 4, 4, 4)}, {"relu1_2": torch.rand(2, 5, 4, 4)})
    with pytest.raises(ValueError, match="lacks layer"):
        loss({"relu2_2": torch.rand(2, 4, 4, 4)}, {"relu1_2": torch.rand(2, 4, 4, 4)})
    with pytest.raises(ValueError, match="same shape"):
        L.build("content", layers=["relu1_2"])({"relu1_2": torch.rand(1, 4, 4, 4)}, {"relu1_2": torch.rand(1, 4, 5, 4)})


# -- perceptual ---------------------------------------------------------------------------------

def test_content_is_weighted_mse():
    p, c = features(seed=1), features(seed=2)
    weights = {"relu1_2": 0.5, "relu3_3": 2.0}
    got = L.build("content", layers=weights)(p, c, reduction="none")
    for k in range(2):
        expected = sum(w * np.mean((p[l][k].numpy() - c[l][k].numpy()) ** 2) for l, w in weights.items())
        assert got[k].item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("normalize", ["none", "hw", "chw"])
def test_gram_is_mse_of_gram_matrices(normalize):
    p, s = features(seed=1), features(seed=2, size=16)  # the style may be larger than the output
    got = L.build("gram", gram_normalize=normalize)(p, s, reduction="none")
    for k in range(2):
        expected = 0.0
        for layer in STYLE_LAYERS:
            _, c, h, w = p[layer].shape
            _, _, hs, ws = s[layer].shape
            div_p = {"none": 1, "hw": h * w, "chw": c * h * w}[normalize]
            div_s = {"none": 1, "hw": hs * ws, "chw": c * hs * ws}[normalize]
            expected += np.mean((gram_np(p[layer][k].numpy(), div_p) - gram_np(s[layer][k].numpy(), div_s)) ** 2)
        assert got[k].item() == pytest.approx(expected, rel=1e-4)


def explicit_balanced(p, s, layers):
    """Eq. 13 of Cheng et al. with plain numpy: per sample, Σ_l ‖G_S − G_P‖² / (‖G_S‖² + ‖G_P‖²)."""
    out = []
    for k in range(next(iter(p.values())).shape[0]):
        total = 0.0
        for layer in layers:
            gp, gs = gram_np(p[layer][k].numpy(), 1), gram_np(s[layer][k].numpy(), 1)
            total += np.sum((gs - gp) ** 2) / (np.sum(gs ** 2) + np.sum(gp ** 2))
        out.append(total)
    return np.array(out)


def test_balanced_matches_equation_13():
    p, s = features(seed=3), features(seed=4)
    got = L.build("balanced_gram", gram_normalize="none")(p, s, reduction="none")
    np.testing.assert_allclose(got.numpy(), explicit_balanced(p, s, STYLE_LAYERS), rtol=1e-4)


def test_balanced_is_within_0_1_per_layer_and_zero_when_equal():
    for seed in range(5):
        p, s = features(seed=seed, scale=10 ** (seed - 2)), features(seed=seed + 10)
        for layer in STYLE_LAYERS:
            values = L.build("balanced_gram", layers=[layer])(p, s, reduction="none")
            assert (values >= 0).all() and (values <= 1).all()
    same = features(seed=9)
    assert L.build("balanced_gram")(same, same).item() == 0.0


def test_balanced_is_invariant_to_scaling_the_features_and_to_the_gram_constant():
    p, s = features(seed=5), features(seed=6)
    base = L.build("balanced_gram", gram_normalize="hw")(p, s, reduction="none")
    for factor in (1e-2, 10.0, 1e3):
        scaled = L.build("balanced_gram")({k: v * factor for k, v in p.items()}, {k: v * factor for k, v in s.items()},
                                          reduction="none")
        torch.testing.assert_close(scaled, base, rtol=1e-4, atol=1e-6)
    for normalize in ("none", "chw"):
        torch.testing.assert_close(L.build("balanced_gram", gram_normalize=normalize)(p, s, reduction="none"), base,
                                   rtol=1e-4, atol=1e-6)


def test_balanced_gradient_is_the_numerators_over_a_constant_denominator():
    p = {k: v.clone().requires_grad_(True) for k, v in features(seed=7, layers=["relu1_2"], channels=(5,)).items()}
    s = features(seed=8, layers=["relu1_2"], channels=(5,))
    L.build("balanced_gram", layers=["relu1_2"], gram_normalize="none", eps=0.0)(p, s).backward()
    got = p["relu1_2"].grad.clone()

    x = p["relu1_2"].detach().clone().requires_grad_(True)
    gp = torch.einsum("bchw,bdhw->bcd", x, x)
    gs = torch.einsum("bchw,bdhw->bcd", s["relu1_2"], s["relu1_2"])
    denominator = (gs.square().sum((1, 2)) + gp.square().sum((1, 2))).detach()  # treated as constant
    ((gs - gp).square().sum((1, 2)) / denominator).mean().backward()
    torch.testing.assert_close(got, x.grad, rtol=1e-4, atol=1e-8)


def test_balanced_sample_value_is_unaffected_by_a_high_magnitude_style_in_the_batch():
    p, s = features(batch=1, seed=11), features(batch=1, seed=12)
    loud_p, loud_s = features(batch=1, seed=13, scale=1e3), features(batch=1, seed=14, scale=1e3)
    together_p = {k: torch.cat([p[k], loud_p[k]]) for k in p}
    together_s = {k: torch.cat([s[k], loud_s[k]]) for k in s}
    balanced, classic = L.build("balanced_gram"), L.build("gram")
    alone = balanced(p, s, reduction="none")
    both = balanced(together_p, together_s, reduction="none")
    torch.testing.assert_close(both[0], alone[0])
    # both samples weigh alike in the balanced batch loss, whereas the classic one is swamped
    assert 0.01 < (both[1] / both[0]).item() < 100
    classic_both = classic(together_p, together_s, reduction="none")
    assert (classic_both[1] / classic_both[0]).item() > 1e9


def test_mean_std_is_mse_of_statistics_with_unbiased_variance_and_eps_inside():
    p, s = features(seed=15), features(seed=16, size=12)
    layers = ["relu1_2", "relu2_2"]
    got = L.build("mean_std", layers=layers)(p, s, reduction="none")
    for k in range(2):
        expected = 0.0
        for layer in layers:
            a = p[layer][k].reshape(p[layer].shape[1], -1).double().numpy()
            b = s[layer][k].reshape(s[layer].shape[1], -1).double().numpy()
            std = lambda f: np.sqrt(f.var(axis=1, ddof=1) + 1e-5)  # noqa: E731
            expected += np.mean((a.mean(1) - b.mean(1)) ** 2) + np.mean((std(a) - std(b)) ** 2)
        assert got[k].item() == pytest.approx(expected, rel=1e-4)


# -- optimal transport ----------------------------------------------------------------------------

def test_moments_against_explicit_formula():
    p, s = features(seed=17, layers=["relu1_2"], channels=(3,)), features(seed=18, layers=["relu1_2"], channels=(3,))
    got = L.build("moments", layers=["relu1_2"])(p, s, reduction="none")
    for k in range(2):
        a = p["relu1_2"][k].reshape(3, -1).T.double().numpy()
        b = s["relu1_2"][k].reshape(3, -1).T.double().numpy()
        d = 3
        expected = np.abs(a.mean(0) - b.mean(0)).sum() / d + \
            np.abs(np.cov(a.T, bias=True) - np.cov(b.T, bias=True)).sum() / d ** 2
        assert got[k].item() == pytest.approx(expected, rel=1e-4)


def test_relaxed_emd_against_brute_force_zero_on_identical_sets_and_symmetric():
    cost = torch.rand(3, 5, 7)
    got = relaxed_emd(cost)
    for k in range(3):
        c = cost[k].numpy()
        expected = max(np.mean([c[i].min() for i in range(5)]), np.mean([c[:, j].min() for j in range(7)]))
        assert got[k].item() == pytest.approx(expected, rel=1e-6)
    torch.testing.assert_close(relaxed_emd(cost.transpose(1, 2)), got)
    vectors = torch.randn(2, 20, 6)
    from stylecore.functional import cosine_distance

    assert relaxed_emd(cosine_distance(vectors, vectors)).abs().max() < 1e-5


def test_remd_loss_is_zero_for_identical_feature_sets_and_symmetric_in_its_sets():
    from stylecore.functional import cosine_distance, random_locations, sample_hypercolumns

    # A feature map whose every position holds the same vector: any sampling gives identical sets.
    vector = torch.rand(1, 6, 1, 1)
    constant = {"relu1_2": vector.expand(1, 6, 8, 8).contiguous()}
    loss = L.build("remd", layers=["relu1_2"], n_samples=64, seed=0)
    assert loss(constant, {"relu1_2": vector.expand(1, 6, 4, 4).contiguous()}).item() == pytest.approx(0, abs=1e-6)
    p, s = features(seed=19, layers=["relu1_2"], channels=(6,)), features(seed=20, layers=["relu1_2"], channels=(6,))
    got = L.build("remd", layers=["relu1_2"], n_samples=32, n_target_samples=20, seed=5)(p, s, reduction="none")
    g = torch.Generator().manual_seed(5)
    a = sample_hypercolumns(p, random_locations(2, 32, g))
    b = sample_hypercolumns(s, random_locations(2, 20, g))
    torch.testing.assert_close(got, relaxed_emd(cosine_distance(a, b)))
    torch.testing.assert_close(got, relaxed_emd(cosine_distance(b, a)))  # REMD(A, B) = REMD(B, A)
    assert (got > 0).all()


def test_remd_is_seeded():
    p, s = features(seed=21), features(seed=22)
    a = L.build("remd", n_samples=16, seed=1)(p, s)
    b = L.build("remd", n_samples=16, seed=1)(p, s)
    c = L.build("remd", n_samples=16, seed=2)(p, s)
    assert a.item() == b.item() and a.item() != c.item()


# -- STROTSS, against its reference's formulas (nkolkin13/STROTSS contextual_loss.py, utils.py), in numpy -------------

# the reference's palette matrix, as printed in its utils.py (rgb_to_yuv_pc)
REFERENCE_PALETTE_MATRIX = np.array([[0.577350, 0.577350, 0.577350], [-0.577350, 0.788675, -0.211325],
                                     [-0.577350, -0.211325, 0.788675]])


def reference_cosine(x, y):
    return 1 - (x @ y.T) / np.linalg.norm(x, axis=1)[:, None] / np.linalg.norm(y, axis=1)[None, :]


def reference_remd(cost):
    return max(cost.min(axis=1).mean(), cost.min(axis=0).mean())


def reference_self_similarity(x, c):
    """dp_loss: mean |Mx / colsum(Mx) − Mc / colsum(Mc)| · n."""
    mx, mc = reference_cosine(x, x), reference_cosine(c, c)
    return np.abs(mx / mx.sum(axis=0, keepdims=True) - mc / mc.sum(axis=0, keepdims=True)).mean() * x.shape[0]


def reference_palette(x_rgb, y_rgb):
    """remd_loss on 3-channel input: rotate by the palette matrix, cost = cosine + sqrt(clamp(‖x − y‖², 1e-5, 1e5)/3)."""
    x, y = x_rgb @ REFERENCE_PALETTE_MATRIX.T, y_rgb @ REFERENCE_PALETTE_MATRIX.T
    squared = (x ** 2).sum(1)[:, None] + (y ** 2).sum(1)[None, :] - 2 * x @ y.T
    return reference_remd(reference_cosine(x, y) + np.sqrt(np.clip(squared, 1e-5, 1e5) / 3))


def reference_moments(x, y):
    mx, my = x.mean(0), y.mean(0)
    sx, sy = (x - mx).T @ (x - mx) / len(x), (y - my).T @ (y - my) / len(y)
    return np.abs(mx - my).mean() + np.abs(sx - sy).mean()


def test_self_similarity_against_the_references_formula():
    from stylecore.functional import random_locations, sample_hypercolumns

    p, c = features(seed=23, layers=["relu1_2"], channels=(4,)), features(seed=24, layers=["relu1_2"], channels=(4,))
    n = 6
    got = L.build("self_similarity", layers=["relu1_2"], n_samples=n, seed=3)(p, c, reduction="none")
    locations = random_locations(2, n, torch.Generator().manual_seed(3))
    x = sample_hypercolumns(p, locations).double().numpy()
    y = sample_hypercolumns(c, locations).double().numpy()
    for k in range(2):
        assert got[k].item() == pytest.approx(reference_self_similarity(x[k], y[k]), rel=1e-4)


def test_the_palette_space_is_the_references_orthonormal_rotation_so_distances_stay_rgbs():
    from stylecore.functional import RGB_TO_PALETTE, rgb_to_palette_space

    matrix = RGB_TO_PALETTE.double().numpy()
    np.testing.assert_allclose(matrix, REFERENCE_PALETTE_MATRIX, atol=1e-6)
    np.testing.assert_allclose(matrix @ matrix.T, np.eye(3), atol=1e-6)  # float32 entries
    a, b = torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4)
    torch.testing.assert_close((rgb_to_palette_space(a) - rgb_to_palette_space(b)).norm(dim=1), (a - b).norm(dim=1))


def test_the_palette_loss_is_the_references_on_random_pixels():
    """BT.601 YUV (what stylecore used before) is not a rotation, and moved this value by a third."""
    from stylecore.functional import random_locations, sample_hypercolumns

    image, style = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    n = 64
    got = L.build("palette", n_samples=n, seed=5)(image, style, reduction="none")
    g = torch.Generator().manual_seed(5)
    first, second = random_locations(2, n, g), random_locations(2, n, g)
    x = sample_hypercolumns([image], first).double().numpy()
    y = sample_hypercolumns([style], second).double().numpy()
    for k in range(2):
        assert got[k].item() == pytest.approx(reference_palette(x[k], y[k]), rel=1e-4)


def test_self_similarity_ignores_feature_scale_and_is_zero_for_equal_inputs():
    p, c = features(seed=25), features(seed=26)
    loss = lambda a, b: L.build("self_similarity", n_samples=64, seed=0)(a, b)  # noqa: E731
    assert loss(p, p).item() == pytest.approx(0, abs=1e-7)
    assert loss({k: 7 * v for k, v in p.items()}, c).item() == pytest.approx(loss(p, c).item(), rel=1e-4)


def test_palette_is_small_for_equal_palettes_and_grows_with_colour_shift():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 32, 32, generator=g)
    shuffled = image.flatten(2)[:, :, torch.randperm(32 * 32, generator=g)].reshape(1, 3, 32, 32)
    loss = L.build("palette", n_samples=512, seed=0)
    same_palette = loss(shuffled, image).item()
    shifted = loss((image * 0.3 + torch.tensor([0.6, 0.0, 0.2]).view(1, 3, 1, 1)).clamp(0, 1), image).item()
    assert same_palette < 0.5 * shifted


def test_strotss_is_the_references_objective():
    """(α·ℓ_C + ℓ_r + ℓ_m + ℓ_p / max(α, 1)) / (α + 2) on hypercolumns of RGB + the layers (remd_dp_g), every term
    computed here from the reference's formulas."""
    from stylecore import functional as SF

    layers = ["relu1_2", "relu2_2"]
    p, c, s = (features(seed=i, layers=layers, channels=(4, 6)) for i in (27, 28, 29))
    images = [torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(i)) for i in (30, 31, 32)]
    n = 12
    for alpha in (16.0, 0.5):
        got = L.build("strotss", layers=layers, alpha=alpha, n_samples=n, seed=9)(p, c, s, *images, reduction="none")
        g = torch.Generator().manual_seed(9)
        shared, style_locations = SF.random_locations(2, n, g), SF.random_locations(2, n, g)
        col = lambda f, img, loc: torch.cat([SF.sample_hypercolumns([img], loc), SF.sample_hypercolumns(f, loc)],  # noqa
                                            2).double().numpy()
        x, cc, ss = col(p, images[0], shared), col(c, images[1], shared), col(s, images[2], style_locations)
        for k in range(2):
            terms = (alpha * reference_self_similarity(x[k], cc[k]) + reference_remd(reference_cosine(x[k], ss[k]))
                     + reference_moments(x[k], ss[k]) + reference_palette(x[k, :, :3], ss[k, :, :3]) / max(alpha, 1))
            assert got[k].item() == pytest.approx(terms / (alpha + 2), rel=1e-4)


# -- regularizers -----------------------------------------------------------------------------------

def test_tv_l1_and_magenta_l2_against_loops():
    x = torch.rand(2, 3, 5, 6)
    l1 = L.build("tv", mode="l1")(x, reduction="none")
    l2 = L.build("tv", mode="l2")(x, reduction="none")
    for k in range(2):
        a = x[k].double().numpy()
        dy, dx = a[:, 1:, :] - a[:, :-1, :], a[:, :, 1:] - a[:, :, :-1]
        assert l1[k].item() == pytest.approx((np.abs(dy).sum() + np.abs(dx).sum()) / (5 * 6), rel=1e-5)
        magenta = 0.5 * (dy ** 2).sum() / (4 * 6 * 3) + 0.5 * (dx ** 2).sum() / (5 * 5 * 3)
        assert l2[k].item() == pytest.approx(magenta, rel=1e-5)
    assert L.build("tv")(torch.full((1, 3, 4, 4), 0.3)).item() == 0.0


def test_kl_matches_torch_distributions_and_is_zero_at_the_prior():
    mu, logvar = torch.randn(4, 10), torch.randn(4, 10)
    got = L.build("kl")(mu, logvar, reduction="none")
    posterior = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    expected = torch.distributions.kl_divergence(posterior, torch.distributions.Normal(0.0, 1.0)).sum(1)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert L.build("kl")(torch.zeros(2, 5), torch.zeros(2, 5)).item() == 0.0


def test_disentanglement_hinge():
    loss = L.build("disentanglement", layers=["relu1_2"])
    y1, y2, s = (features(seed=i, layers=["relu1_2"], channels=(4,)) for i in (33, 34, 35))
    # two stylizations that agree in style are not penalised
    assert loss(y1, y1, s).item() == 0.0
    # if the style image matches y1 exactly, the penalty is the whole y1–y2 style distance
    from stylecore.functional import mean_std

    m1, s1 = mean_std(y1["relu1_2"])
    m2, s2 = mean_std(y2["relu1_2"])
    distance = (torch.cat([m1.flatten(1), s1.flatten(1)], 1) - torch.cat([m2.flatten(1), s2.flatten(1)], 1)).square().mean(1)
    torch.testing.assert_close(loss(y1, y2, y1, reduction="none"), distance)


# -- adversarial --------------------------------------------------------------------------------------

def test_gan_losses_against_their_formulas_per_patch():
    real, fake = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    sig = torch.sigmoid
    per = lambda t: t.flatten(1).mean(1)  # noqa: E731  (PatchGAN: mean over patches)
    cases = {
        "sgan": (-torch.log(sig(fake)), -torch.log(sig(real)) - torch.log(1 - sig(fake))),
        "lsgan": ((fake - 1) ** 2, (real - 1) ** 2 + fake ** 2),
        "hinge": (-fake, torch.clamp(1 - real, min=0) + torch.clamp(1 + fake, min=0)),
        "wgan_gp": (-fake, -real + fake),
    }
    for name, (g_expected, d_expected) in cases.items():
        loss = L.build(name)
        torch.testing.assert_close(loss(fake, reduction="none"), per(g_expected), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(loss.discriminator(real, fake, reduction="none"), per(d_expected), rtol=1e-5, atol=1e-5)


def test_sgan_is_stable_for_extreme_logits():
    loss = L.build("sgan")
    assert torch.isfinite(loss(torch.tensor([-200.0, 200.0]))).all()
    assert torch.isfinite(loss.discriminator(torch.tensor([-200.0]), torch.tensor([200.0])))


def test_wgan_gp_penalty_is_zero_for_a_unit_norm_linear_critic_and_counts_otherwise():
    dims = 3 * 4 * 4
    w = torch.randn(dims)
    for norm, expected in ((1.0, 0.0), (2.0, 1.0), (0.5, 0.25)):
        weight = w / w.norm() * norm
        critic = lambda x, weight=weight: x.flatten(1) @ weight  # noqa: E731
        real, fake = torch.rand(5, 3, 4, 4), torch.rand(5, 3, 4, 4)
        penalty = L.gradient_penalty(critic, real, fake)
        torch.testing.assert_close(penalty, torch.full((5,), expected), rtol=1e-5, atol=1e-5)
    loss = L.build("wgan_gp", gp_weight=10.0)
    critic = torch.nn.Linear(dims, 1)
    real, fake = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4)
    r, f = critic(real.flatten(1)).squeeze(1), critic(fake.flatten(1)).squeeze(1)
    with_gp = loss.discriminator(r, f, critic=lambda x: critic(x.flatten(1)), real_images=real, fake_images=fake)
    grad_norm = critic.weight.norm()
    assert with_gp.item() == pytest.approx((-r + f).mean().item() + 10 * (grad_norm.item() - 1) ** 2, rel=1e-5)
    with_gp.backward()  # the penalty is differentiable w.r.t. the critic
    assert critic.weight.grad is not None


def test_cycle_identity_and_cam():
    a, b = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4)
    torch.testing.assert_close(L.build("cycle")(a, b, reduction="none"), (a - b).abs().flatten(1).mean(1))
    torch.testing.assert_close(L.build("identity", distance="mse")(a, b), ((a - b) ** 2).mean())
    pos, neg = torch.randn(4, 1), torch.randn(4, 1)
    cam = L.build("cam")
    expected_g = -torch.log(torch.sigmoid(pos)).squeeze(1) - torch.log(1 - torch.sigmoid(neg)).squeeze(1)
    torch.testing.assert_close(cam(pos, neg, reduction="none"), expected_g, rtol=1e-5, atol=1e-5)
    expected_d = ((pos - 1) ** 2 + neg ** 2).squeeze(1)
    torch.testing.assert_close(cam(pos, neg, reduction="none", side="discriminator"), expected_d)
    with pytest.raises(ValueError, match="side="):
        cam(pos, neg, side="both")


def test_every_feature_loss_runs_on_real_encoder_features_under_bf16_autocast():
    from stylecore.encoders import VGGEncoder

    enc = VGGEncoder("vgg16", weights="random:0", layers=["relu5_3"])
    pred = torch.rand(2, 3, 32, 32, requires_grad=True)
    style, content = torch.rand(2, 3, 48, 40), torch.rand(2, 3, 32, 32)
    for name in ["content", "gram", "balanced_gram", "mean_std", "moments", "remd", "self_similarity"]:
        loss = L.build(name, **({"n_samples": 64} if name in ("remd", "self_similarity") else {}))
        target = content if loss.slots["target"][1] == "content" else style
        with torch.autocast("cpu", dtype=torch.bfloat16):
            value = loss(enc(pred, loss.layers), enc(target, loss.layers))
        assert value.dtype == torch.float32 and math.isfinite(value.item()), name
        grad, = torch.autograd.grad(value, pred)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0, name

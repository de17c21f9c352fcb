import pytest
import torch

import stylecore.models as models
from stylecore import functional as SF
from stylecore.models.blocks import ConvLayer, MirroredDecoder, Upsample
from stylecore.models.magenta import ConditionalInstanceNorm
from stylecore.models.sanet import StyleAttention
from stylecore.objective import build_objective

from model_helpers import images, offline_model

ALL = ["adain", "linear", "magenta", "magenta_lite", "sanet", "vae_adain"]


def test_registry_lists_the_six_models_and_rejects_unknown_names():
    assert models.names() == ALL
    for name in ALL:
        assert models.describe(name)
    with pytest.raises(ValueError, match="Did you mean .adain."):
        models.build("adian")


@pytest.mark.parametrize("name", ALL)
def test_any_content_size_comes_back_at_its_own_size(name):
    model = offline_model(name)
    content, style = images(2, 37, 53, 1), images(2, 45, 61, 2)
    with torch.no_grad():
        out = model(content, style)
    assert out.shape == content.shape and torch.isfinite(out).all()


@pytest.mark.parametrize("name", ALL)
def test_one_style_serves_a_whole_batch_and_grayscale_is_expanded(name):
    model = offline_model(name)
    content, style = images(3, 48, 48, 1), images(1, 48, 48, 2)
    with torch.no_grad():
        shared = model(content, style)
        each = model(content, style.expand(3, -1, -1, -1))
        gray = model(content[:, :1], style)
    torch.testing.assert_close(shared, each)
    assert gray.shape == (3, 3, 48, 48)


@pytest.mark.parametrize("name", ALL)
def test_stylizing_indexed_pairs_equals_stylizing_the_gathered_batches(name):
    # Each distinct image is encoded once; every pair must still come out as forward() makes it, padding included.
    model = offline_model(name)
    contents, styles = images(3, 37, 53, 1), images(2, 45, 61, 2)
    content_index, style_index = torch.tensor([0, 1, 2, 0, 1, 2, 2]), torch.tensor([0, 0, 0, 1, 1, 1, 0])
    with torch.no_grad():
        pairs = model.stylize_pairs(contents, styles, content_index, style_index)
        gathered = model(contents[content_index], styles[style_index])
    assert pairs.shape == (7, 3, 37, 53)
    torch.testing.assert_close(pairs, gathered, atol=1e-5, rtol=1e-4)


def test_indexed_pairs_are_checked_before_any_encoding():
    model = offline_model("adain")
    contents, styles = images(2, 32, 32, 1), images(2, 32, 32, 2)
    with pytest.raises(ValueError, match=r"style_index must lie in \[0, 2\)"):
        model.stylize_pairs(contents, styles, torch.tensor([0, 1]), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="one entry per pair"):
        model.stylize_pairs(contents, styles, torch.tensor([0, 1]), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"alpha must lie in \[0, 1\]"):
        model.stylize_pairs(contents, styles, torch.tensor([0, 1]), torch.tensor([0, 1]), alpha=1.5)


@pytest.mark.parametrize("bad, message", [
    (torch.rand(1, 4, 32, 32), "RGBA"),
    (torch.rand(3, 32, 32), "batch dimension"),
    (torch.rand(1, 3, 1, 1), "at least"),
    ((torch.rand(1, 3, 32, 32) * 255).byte(), "float"),
    (torch.rand(1, 2, 32, 32), "channels"),
])
def test_bad_inputs_fail_with_a_message_naming_the_fix(bad, message):
    model = offline_model("adain")
    with pytest.raises(ValueError, match=message):
        model(bad, torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match=message):
        model(torch.rand(1, 3, 32, 32), bad)


def test_adain_decoder_is_the_mirrored_vgg19_decoder_of_the_paper():
    decoder = MirroredDecoder("relu4_1")
    convs = [(m[1].in_channels, m[1].out_channels) for m in decoder if isinstance(m, ConvLayer)]
    assert convs == [(512, 256), (256, 256), (256, 256), (256, 256), (256, 128), (128, 128), (128, 64), (64, 64),
                     (64, 3)]
    kinds = ["up" if isinstance(m, Upsample) else "conv" for m in decoder]
    assert kinds == ["conv", "up", "conv", "conv", "conv", "conv", "up", "conv", "conv", "up", "conv", "conv"]
    assert all(isinstance(m[0], torch.nn.ReflectionPad2d) for m in decoder if isinstance(m, ConvLayer))
    assert len(decoder[-1]) == 2  # no ReLU (and no activation) after the last conv
    # Parameter count of that architecture: Σ (9·cin·cout + cout).
    assert sum(p.numel() for p in decoder.parameters()) == sum(9 * i * o + o for i, o in convs)


def test_adain_with_alpha_zero_decodes_the_content_features():
    model = offline_model("adain")
    content, style = images(2, 64, 64, 1), images(2, 64, 64, 2)
    with torch.no_grad():
        out = model(content, style, alpha=0.0)
        expected = model.decoder(model.encoder(content, ["relu4_1"])["relu4_1"])
    torch.testing.assert_close(out, expected)


def test_adain_alpha_blends_features_linearly():
    model = offline_model("adain")
    content, style = images(1, 64, 64, 1), images(1, 64, 64, 2)
    with torch.no_grad():
        fc = model.encoder(content, ["relu4_1"])["relu4_1"]
        fs = model.encoder(style, ["relu4_1"])["relu4_1"]
        t = SF.adain(fc, fs)
        expected = model.decoder(0.3 * t + 0.7 * fc)
        torch.testing.assert_close(model(content, style, alpha=0.3), expected, rtol=1e-4, atol=1e-5)


def test_adain_mixing_two_styles_equals_mixing_their_adain_features():
    """The reference mixes AdaIN outputs; mixing (μ, σ) codes must give the same result."""
    model = offline_model("adain")
    content, s1, s2 = images(1, 64, 64, 1), images(1, 64, 64, 2), images(1, 48, 80, 3)
    with torch.no_grad():
        fc = model.encoder(content, ["relu4_1"])["relu4_1"]
        t1 = SF.adain(fc, model.encoder(s1, ["relu4_1"])["relu4_1"])
        t2 = SF.adain(fc, model.encoder(s2, ["relu4_1"])["relu4_1"])
        expected = model.decoder(0.25 * t1 + 0.75 * t2)
        out = model.stylize(content, [model.style_code(s1), model.style_code(s2)], [1.0, 3.0])
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ALL)
def test_style_weights_one_and_zero_equal_the_single_style(name):
    model = offline_model(name)
    content, s1, s2 = images(1, 64, 64, 1), images(1, 64, 64, 2), images(1, 64, 64, 3)
    with torch.no_grad():
        c1, c2 = model.style_code(s1), model.style_code(s2)
        mixed = model.stylize(content, [c1, c2], [1.0, 0.0])
        single = model.stylize(content, [c1])
    torch.testing.assert_close(mixed, single, rtol=1e-5, atol=1e-6)


def test_style_weights_are_checked():
    model = offline_model("adain")
    code = model.style_code(images(1, 32, 32, 2))
    with pytest.raises(ValueError, match="one weight per style"):
        model.stylize(images(1, 32, 32, 1), [code, code], [1.0])
    with pytest.raises(ValueError, match="positive sum"):
        model.stylize(images(1, 32, 32, 1), [code, code], [0.0, 0.0])


def test_sanet_attention_matches_the_papers_formula():
    torch.manual_seed(0)
    attention = StyleAttention(8)
    fc, fs = torch.randn(2, 8, 4, 5), torch.randn(2, 8, 3, 6)
    f = attention.query(SF.instance_normalize(fc)).flatten(2)  # (B, C, Nc)
    g = attention.key(SF.instance_normalize(fs)).flatten(2)  # (B, C, Ns)
    h = attention.value(fs).flatten(2)
    s = torch.softmax(f.transpose(1, 2) @ g, dim=-1)  # (B, Nc, Ns), normalised over style positions
    o = (h @ s.transpose(1, 2)).view(2, 8, 4, 5)
    expected = fc + attention.out(o)
    torch.testing.assert_close(attention(fc, fs), expected, rtol=1e-4, atol=1e-5)


def test_sanet_pads_sizes_that_are_not_multiples_of_16():
    model = offline_model("sanet")
    with torch.no_grad():
        out = model(images(1, 50, 70, 1), images(1, 40, 33, 2))
    assert out.shape == (1, 3, 50, 70)


def test_linear_transform_matches_its_formula():
    model = offline_model("linear", layer="relu3_1")
    content, style = images(2, 32, 40, 1), images(2, 48, 32, 2)
    t = model.transform
    with torch.no_grad():
        fc = model.encoder(content, ["relu3_1"])["relu3_1"]
        fs = model.encoder(style, ["relu3_1"])["relu3_1"]
        mc, ms = fc.mean((2, 3), keepdim=True), fs.mean((2, 3), keepdim=True)

        def matrix(net, x):
            y = net.convs(x).flatten(2)
            gram = y @ y.transpose(1, 2) / y.shape[2]
            return net.fc(gram.flatten(1)).view(-1, 32, 32)

        T = matrix(t.style_net, fs - ms) @ matrix(t.content_net, fc - mc)
        compressed = t.compress(fc - mc).flatten(2)
        expected = t.unzip((T @ compressed).view(2, 32, *fc.shape[-2:])) + ms
        torch.testing.assert_close(model.transfer(fc, model.style_code(style)), expected, rtol=1e-4, atol=1e-4)
    assert model.size_multiple == 4 and offline_model("linear").size_multiple == 8


def test_linear_has_a_decoder_phase_then_a_transform_phase():
    model = offline_model("linear", autoencoder_fraction=0.25)
    assert [(p.name, p.fraction) for p in model.training_phases()] == [("autoencoder", 0.25), ("transform", 0.75)]
    model.set_phase("autoencoder")
    assert all(p.requires_grad for p in model.decoder.parameters())
    assert not any(p.requires_grad for p in model.transform.parameters())
    model.set_phase("transform")
    assert not any(p.requires_grad for p in model.decoder.parameters())
    assert all(p.requires_grad for p in model.transform.parameters())
    assert not any(p.requires_grad for p in model.encoder.parameters())
    style = model.default_objective("transform")["style"]
    assert style["gram_normalize"] == "chw" and style["weight"] == 0.02 and style["include_mean"]


def test_magenta_conditional_norm_starts_as_instance_norm_and_has_13_sites():
    norm = ConditionalInstanceNorm(4, 10)
    x = torch.randn(2, 4, 5, 6)
    expected = (x - x.mean((2, 3), keepdim=True)) / torch.sqrt(x.var((2, 3), unbiased=False, keepdim=True) + 1e-5)
    torch.testing.assert_close(norm(x, torch.randn(2, 10)), expected, rtol=1e-4, atol=1e-5)
    model = offline_model("magenta")
    sites = [m for m in model.transformer.modules() if isinstance(m, ConditionalInstanceNorm)]
    assert len(sites) == 13
    assert model.loss_encoder().describe()["pooling"] == "avg"
    assert model.loss_encoder().describe()["normalization"] == "caffe"


def test_magenta_alpha_interpolates_towards_the_contents_own_embedding():
    model = offline_model("magenta")
    content, style = images(1, 64, 64, 1), images(1, 64, 64, 2)
    with torch.no_grad():
        expected = model.transformer(content, 0.4 * model.predictor(style) + 0.6 * model.predictor(content))
        torch.testing.assert_close(model(content, style, alpha=0.4), expected, rtol=1e-4, atol=1e-5)


def test_magenta_inception_trunk_reaches_mixed_6e():
    model = offline_model("magenta", predictor="inception_v3")
    assert model.predictor.bottleneck.in_features == 768
    with torch.no_grad():
        assert model.predictor(images(1, 40, 40, 1)).shape == (1, 100)  # small styles are upsampled


def test_vae_codes_from_the_prior_give_finite_images_and_interpolate():
    model = offline_model("vae_adain", code_dim=16)
    content = images(3, 48, 48, 1)
    codes = model.sample_codes(3, generator=torch.Generator().manual_seed(0))
    assert codes.shape == (3, 16)
    with torch.no_grad():
        out = model.stylize(content, [codes])
        assert torch.isfinite(out).all()
        a, b = codes[:1], codes[1:2]
        torch.testing.assert_close(model.interpolate_codes(a, b, 0.0), a)
        torch.testing.assert_close(model.interpolate_codes(a, b, 1.0), b)
        mid = model.interpolate_codes(a, b, 0.5)
        torch.testing.assert_close(mid, (a + b) / 2)


def test_vae_inference_is_deterministic_and_training_samples():
    model = offline_model("vae_adain")
    content, style = images(2, 48, 48, 1), images(2, 48, 48, 2)
    with torch.no_grad():
        torch.testing.assert_close(model(content, style), model(content, style))
        layers = {"style": set(), "content": set(), "pred2": set()}
        mu, logvar = model.style_distribution(style)
        first = model.training_outputs(content, style, layers).images["pred"]
        second = model.training_outputs(content, style, layers).images["pred"]
    assert not torch.equal(first, second)  # z = μ + σ·ε differs between training draws
    assert mu.shape == logvar.shape == (2, 64)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("loss", ["gram", "balanced_gram", "mean_std", "moments", "remd"])
def test_style_term_swaps_to_any_style_loss_on_the_same_layers(name, loss):
    model = offline_model(name)
    phase = model.training_phases()[-1].name
    native = model.default_objective(phase)
    swapped = model.default_objective(phase, style_loss=loss)
    assert swapped["style"]["loss"] == loss
    assert swapped["style"]["layers"] == native["style"]["layers"]
    assert swapped["style"]["weight"] == native["style"]["weight"]
    objective = build_objective(swapped, model.loss_encoder())
    assert type(objective.terms["style"]).registered_name == loss


def test_style_loss_must_compare_features():
    with pytest.raises(ValueError, match="feature style losses"):
        offline_model("adain").default_objective(style_loss="tv")


def test_checkpointed_state_leaves_out_the_frozen_encoder():
    model = offline_model("adain")
    state = model.persistent_state()
    assert state and not any(key.startswith("encoder.") for key in state)
    assert all(key.startswith("decoder.") for key in state)

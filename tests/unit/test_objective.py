import pytest
import torch

from stylecore.encoders import VGGEncoder
from stylecore.objective import build_objective
import stylecore.losses as L


@pytest.fixture(scope="module")
def encoder():
    return VGGEncoder("vgg16", weights="random:0", layers=["relu4_3"])


def count_encoder_passes(encoder):
    calls = []
    hook = encoder.convs["conv1_1"].register_forward_hook(lambda m, i, o: calls.append(i[0].shape))
    return calls, hook


def test_one_encoder_pass_per_role_for_the_union_of_layers(encoder):
    objective = build_objective({
        "content": {"layers": ["relu3_3"]},
        "style": {"loss": "balanced_gram", "weight": 2.0},
        "stats": {"loss": "mean_std", "layers": ["relu1_1", "relu2_1"]},
        "moments": 0.5,
    }, encoder)
    assert objective.feature_layers() == {
        "pred": {"relu3_3", "relu1_2", "relu2_2", "relu4_3", "relu1_1", "relu2_1"},
        "content": {"relu3_3"},
        "style": {"relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu1_1", "relu2_1"},
    }
    calls, hook = count_encoder_passes(encoder)
    try:
        objective(images={"pred": torch.rand(2, 3, 32, 32), "content": torch.rand(2, 3, 32, 32),
                          "style": torch.rand(2, 3, 40, 40)})
    finally:
        hook.remove()
    assert len(calls) == 3  # pred, content, style: once each


def test_given_features_are_reused_instead_of_a_second_pass(encoder):
    objective = build_objective({"style": {"loss": "gram", "layers": ["relu1_2", "relu2_2"]}}, encoder)
    style = torch.rand(1, 3, 32, 32)
    style_features = encoder(style, ["relu1_2", "relu2_2"])
    calls, hook = count_encoder_passes(encoder)
    try:
        out = objective(images={"pred": torch.rand(1, 3, 32, 32)}, features={"style": style_features})
    finally:
        hook.remove()
    assert len(calls) == 1 and out.total.item() > 0


def test_total_is_the_weighted_sum_and_zero_weight_terms_only_monitor(encoder):
    objective = build_objective({
        "content": {"weight": 3.0, "layers": ["relu2_2"]},
        "style": {"loss": "balanced_gram", "weight": 10.0, "layers": ["relu1_2", "relu2_2"]},
        "classic": {"loss": "gram", "weight": 0, "layers": ["relu1_2", "relu2_2"]},
        "tv": 0.1,
    }, encoder)
    pred = torch.rand(2, 3, 32, 32, requires_grad=True)
    images = {"pred": pred, "content": torch.rand(2, 3, 32, 32), "style": torch.rand(2, 3, 32, 32)}
    out = objective(images=images)
    pred_f = encoder(pred, ["relu1_2", "relu2_2"])
    content_f, style_f = encoder(images["content"], ["relu2_2"]), encoder(images["style"], ["relu1_2", "relu2_2"])
    expected = {
        "content": 3.0 * L.build("content", layers=["relu2_2"])(pred_f, content_f),
        "style": 10.0 * L.build("balanced_gram", layers=["relu1_2", "relu2_2"])(pred_f, style_f),
        "tv": 0.1 * L.build("tv")(pred),
    }
    for name, value in expected.items():
        torch.testing.assert_close(out.terms[name], value)
    torch.testing.assert_close(out.total, sum(expected.values()))
    assert out.terms["classic"].item() == 0.0 and out.per_sample["classic"].shape == (2,)
    assert out.per_sample["classic"].min() > 0 and not out.per_sample["classic"].requires_grad
    assert set(out.as_dict()) == {"total", "content", "style", "classic", "tv"}


def test_slots_route_to_other_roles_and_values(encoder):
    objective = build_objective({
        "content": {"layers": ["relu4_3"], "target": "adain_target"},
        "kl": 0.01,
    }, encoder)
    pred = torch.rand(2, 3, 32, 32)
    target = {"relu4_3": torch.rand(2, 512, 4, 4)}
    mu, logvar = torch.randn(2, 8), torch.randn(2, 8)
    out = objective(images={"pred": pred}, features={"adain_target": target},
                    values={"style_mu": mu, "style_logvar": logvar})
    torch.testing.assert_close(out.terms["content"], L.build("content", layers=["relu4_3"])(encoder(pred, ["relu4_3"]), target))
    torch.testing.assert_close(out.terms["kl"], 0.01 * L.build("kl")(mu, logvar))


def test_config_errors_name_the_key_and_the_fix(encoder):
    with pytest.raises(ValueError, match="unknown loss 'stlye'"):
        build_objective({"stlye": 1.0}, encoder)
    with pytest.raises(ValueError, match="term 'style' .*unknown key\\(s\\) layer; allowed: loss, layers, weight"):
        build_objective({"style": {"loss": "gram", "layer": ["relu1_1"]}}, encoder)
    with pytest.raises(ValueError, match="term 'style': gram: weight must be a finite number ≥ 0"):
        build_objective({"style": {"loss": "gram", "weight": -2}}, encoder)
    with pytest.raises(ValueError, match="beyond the encoder's truncation at relu4_3"):
        build_objective({"style": {"loss": "gram", "layers": ["relu5_1"]}}, encoder)
    with pytest.raises(ValueError, match="unknown layer name.*'relu4_4' for vgg16"):
        build_objective({"style": {"loss": "gram", "layers": ["relu4_4"]}}, encoder)
    with pytest.raises(ValueError, match="pass an encoder"):
        build_objective({"content": 1.0})
    objective = build_objective({"content": 1.0}, encoder)
    with pytest.raises(ValueError, match="role 'content' needs features.*pass images\\['content'\\]"):
        objective(images={"pred": torch.rand(1, 3, 32, 32)})


def test_terms_that_read_the_same_grams_compute_them_once_with_the_same_values_and_gradients():
    from stylecore import functional as SF

    torch.manual_seed(0)
    features = {"pred": {"relu2_2": torch.rand(2, 8, 6, 6, requires_grad=True)}, "style": {"relu2_2": torch.rand(2, 8, 6, 6)}}
    config = {"classic": {"loss": "gram", "layers": ["relu2_2"], "weight": 0.0},  # monitored: computed without grad
              "style": {"loss": "balanced_gram", "layers": ["relu2_2"], "weight": 2.0},
              "again": {"loss": "gram", "layers": ["relu2_2"], "weight": 1.0}}
    encoder = VGGEncoder("vgg16", layers=["relu2_2"], weights="random:0")  # the features are given: never run
    objective = build_objective(config, encoder)
    calls = []
    original = SF._gram
    SF._gram = lambda x, normalize: calls.append(normalize) or original(x, normalize)
    try:
        shared = objective(features=features)
        shared.total.backward()
        grad_shared = features["pred"]["relu2_2"].grad.clone()
    finally:
        SF._gram = original
    # two tensors × (no-grad for the weight-0 term, with grad for the others): 4 Grams, not 6
    assert len(calls) == 4
    features["pred"]["relu2_2"].grad = None
    separate = {name: build_objective({name: settings}, encoder)(features=features) for name, settings in config.items()}
    sum(out.total for out in separate.values()).backward()
    for name in config:
        torch.testing.assert_close(shared.per_sample[name], separate[name].per_sample[name])
    torch.testing.assert_close(grad_shared, features["pred"]["relu2_2"].grad)

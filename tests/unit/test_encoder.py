import os
import pickle
import subprocess
import sys

import pytest
import torch
import torchvision
from torch.nn import functional as F

from stylecore.encoders import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EncoderWeightsUnavailable,
    VGGEncoder,
    imagenet_weights_file,
    layer_names,
)


@pytest.fixture(scope="module")
def vgg16():
    return VGGEncoder("vgg16", weights="random:0")


def test_layer_names_follow_the_vgg_blocks():
    names16, names19 = layer_names("vgg16"), layer_names("vgg19")
    assert sum(n.startswith("conv") for n in names16) == 13
    assert sum(n.startswith("conv") for n in names19) == 16
    assert names16[:5] == ["conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1"]
    assert "relu4_3" in names16 and "relu4_4" not in names16 and "relu4_4" in names19


def test_shapes_per_layer(vgg16):
    x = torch.rand(2, 3, 64, 48)
    wanted = ["relu1_1", "relu1_2", "pool1", "relu2_2", "relu3_3", "relu4_3", "pool4", "relu5_3"]
    out = vgg16(x, wanted)
    expected = {"relu1_1": (64, 64, 48), "relu1_2": (64, 64, 48), "pool1": (64, 32, 24), "relu2_2": (128, 32, 24),
                "relu3_3": (256, 16, 12), "relu4_3": (512, 8, 6), "pool4": (512, 4, 3), "relu5_3": (512, 4, 3)}
    assert list(out) == wanted
    for name, (c, h, w) in expected.items():
        assert out[name].shape == (2, c, h, w), name


def test_one_pass_however_many_layers(vgg16):
    calls = {name: 0 for name in vgg16.convs}
    hooks = [conv.register_forward_hook(lambda m, i, o, n=name: calls.__setitem__(n, calls[n] + 1))
             for name, conv in vgg16.convs.items()]
    try:
        vgg16(torch.rand(1, 3, 32, 32), ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "conv4_1", "relu3_3"])
    finally:
        for hook in hooks:
            hook.remove()
    # every conv up to conv4_1 ran exactly once; nothing deeper ran
    assert all(calls[n] == 1 for n in ["conv1_1", "conv2_2", "conv3_3", "conv4_1"])
    assert calls["conv4_2"] == 0 and calls["conv5_1"] == 0


def test_requested_conv_output_is_not_clobbered_by_inplace_relu(vgg16):
    out = vgg16(torch.rand(1, 3, 32, 32), ["conv1_1", "relu1_1"])
    assert (out["conv1_1"] < 0).any()
    assert torch.equal(out["relu1_1"], out["conv1_1"].clamp_min(0))


def test_truncation_drops_deeper_layers_and_refuses_them():
    enc = VGGEncoder("vgg19", layers=["relu3_1", "relu2_1"], weights="random:1")
    assert enc.available_layers[-1] == "relu3_1"
    assert "conv3_2" not in enc.convs
    with pytest.raises(ValueError, match="beyond this encoder's truncation at relu3_1"):
        enc(torch.rand(1, 3, 32, 32), ["relu4_1"])


def test_matches_torchvision_vgg_with_imagenet_normalisation(tmp_path):
    reference = torchvision.models.vgg16(weights=None).eval()
    path = tmp_path / "vgg16.pth"
    torch.save(reference.state_dict(), path)
    enc = VGGEncoder("vgg16", weights=str(path), layers=["relu4_3"])
    x = torch.rand(2, 3, 40, 40)
    normalised = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = reference.features[:23](normalised)  # index 22 is relu4_3
        got = enc(x, ["relu4_3"])["relu4_3"]
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    info = enc.describe()
    assert info["weights_kind"] == "file" and len(info["weights_sha256"]) == 64


def test_caffe_normalisation_is_bgr_times_255_minus_mean():
    enc = VGGEncoder("vgg16", weights="random:3", normalization="caffe", layers=["conv1_1"])
    x = torch.rand(1, 3, 8, 8)
    bgr = x[:, [2, 1, 0]] * 255.0 - torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)
    conv = enc.convs["conv1_1"]
    expected = F.conv2d(bgr, conv.weight, conv.bias, padding=1)
    torch.testing.assert_close(enc(x, ["conv1_1"])["conv1_1"], expected, rtol=1e-4, atol=1e-3)


def test_avg_pooling_and_reflect_padding():
    enc = VGGEncoder("vgg16", weights="random:4", pooling="avg", padding="reflect", layers=["pool1"])
    x = torch.rand(1, 3, 16, 16)
    out = enc(x, ["conv1_1", "relu1_2", "pool1"])
    torch.testing.assert_close(out["pool1"], F.avg_pool2d(out["relu1_2"], 2))
    conv = enc.convs["conv1_1"]
    normalised = enc.normalize(x)
    expected = F.conv2d(F.pad(normalised, (1, 1, 1, 1), mode="reflect"), conv.weight, conv.bias)
    torch.testing.assert_close(out["conv1_1"], expected, rtol=1e-5, atol=1e-5)


def test_frozen_but_passes_gradients_to_the_input(vgg16):
    assert not any(p.requires_grad for p in vgg16.parameters())
    parent = torch.nn.Sequential(vgg16)
    parent.train()
    assert not vgg16.training
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    vgg16(x, ["relu3_3"])["relu3_3"].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_random_weights_are_seeded():
    a, b, c = (VGGEncoder("vgg16", weights=w, layers=["relu1_1"]) for w in ("random:7", "random:7", "random:8"))
    assert torch.equal(a.convs["conv1_1"].weight, b.convs["conv1_1"].weight)
    assert not torch.equal(a.convs["conv1_1"].weight, c.convs["conv1_1"].weight)
    assert a.describe()["pretrained"] == "false" and a.describe()["weights"] == "random:7"


def test_safetensors_file_and_own_layer_names(tmp_path):
    from safetensors.torch import save_file

    source = VGGEncoder("vgg19", weights="random:5", layers=["relu2_1"])
    path = tmp_path / "enc.safetensors"
    save_file({f"{n}.{p}": getattr(conv, p).contiguous() for n, conv in source.convs.items() for p in ("weight", "bias")},
              str(path))
    loaded = VGGEncoder("vgg19", weights=str(path), layers=["relu2_1"])
    x = torch.rand(1, 3, 16, 16)
    torch.testing.assert_close(loaded(x, ["relu2_1"])["relu2_1"], source(x, ["relu2_1"])["relu2_1"])


class NotATensor:
    pass


def test_pickled_objects_are_refused_with_a_clear_message(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as handle:
        pickle.dump({"features.0.weight": NotATensor()}, handle, protocol=2)
    with pytest.raises(EncoderWeightsUnavailable, match="weights_only=True"):
        VGGEncoder("vgg16", weights=str(path))


def test_incomplete_state_dict_names_the_missing_tensor(tmp_path):
    path = tmp_path / "half.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, path)
    with pytest.raises(EncoderWeightsUnavailable, match="Is this a vgg16 state dict"):
        VGGEncoder("vgg16", weights=str(path))


def test_bad_arguments_name_the_allowed_values():
    with pytest.raises(ValueError, match="choose one of: vgg16, vgg19"):
        VGGEncoder("vgg11", weights="random:0")
    with pytest.raises(ValueError, match="'max' or 'avg'"):
        VGGEncoder(weights="random:0", pooling="median")
    with pytest.raises(ValueError, match="unknown layer name.*'relu9_9'"):
        VGGEncoder(weights="random:0", layers=["relu9_9"])
    with pytest.raises(ValueError, match="integer seed"):
        VGGEncoder(weights="random:abc")
    with pytest.raises(EncoderWeightsUnavailable, match="neither 'imagenet'"):
        VGGEncoder(weights="/nonexistent/vgg.pth")
    enc = VGGEncoder("vgg16", weights="random:0", layers=["relu1_1"])
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        enc(torch.rand(1, 4, 8, 8), ["relu1_1"])


def test_imagenet_offline_error_names_the_expected_file(tmp_path):
    # A real download attempt through a proxy on a closed loopback port: fails at once, as offline.
    code = (
        "from stylecore.encoders import VGGEncoder, EncoderWeightsUnavailable\n"
        "try:\n    VGGEncoder('vgg16', weights='imagenet')\n"
        "except EncoderWeightsUnavailable as e:\n    print(e)\n"
    )
    env = dict(os.environ, TORCH_HOME=str(tmp_path), https_proxy="http://127.0.0.1:9", http_proxy="http://127.0.0.1:9",
               HTTPS_PROXY="http://127.0.0.1:9", no_proxy="", NO_PROXY="")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    message = result.stdout
    assert "vgg16-397923af.pth" in message
    assert str(tmp_path / "hub" / "checkpoints") in message
    assert "random:<seed>" in message
    assert not any((tmp_path / "hub" / "checkpoints").glob("*.pth"))


def test_imagenet_uses_the_cached_file_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = imagenet_weights_file("vgg16")
    assert expected == tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth"
    expected.parent.mkdir(parents=True)
    reference = torchvision.models.vgg16(weights=None)
    torch.save(reference.state_dict(), expected)
    enc = VGGEncoder("vgg16", weights="imagenet", layers=["relu1_1"])
    info = enc.describe()
    assert info["weights_kind"] == "imagenet" and info["pretrained"] == "true"
    assert info["weights_file"] == str(expected)
    torch.testing.assert_close(enc.convs["conv1_1"].weight, reference.features[0].weight)

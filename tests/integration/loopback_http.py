"""A real HTTP server on 127.0.0.1 that serves files with Range support and can drop a connection."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path


class _Handler(http.server.BaseHTTPRequestHandler):
    server: "_Server"

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.server.root / self.path.lstrip("/")
        self.server.requests.append((self.path, self.headers.get("Range")))
        if not path.is_file():
            self.send_error(404, "not found")
            return
        data = path.read_bytes()
        start = 0
        range_header = self.headers.get("Range")
        if range_header and self.server.ranges:
            start = int(range_header.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        drop_at = self.server.drop_after.pop(self.path, None)
        if drop_at is not None:  # send part of the body, then cut the connection
            self.wfile.write(body[:drop_at])
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        self.wfile.write(body)


class _Server(http.server.ThreadingHTTPServer):
    root: Path
    ranges: bool
    drop_after: dict[str, int]
    requests: list


class LoopbackServer:
    """``with LoopbackServer(folder) as server: server.url("file.tar")``."""

    def __init__(self, root: Path, ranges: bool = True) -> None:
        self.httpd = _Server(("127.0.0.1", 0), _Handler)
        self.httpd.root, self.httpd.ranges = Path(root), ranges
        self.httpd.drop_after, self.httpd.requests = {}, []
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def drop_once(self, name: str, after_bytes: int) -> None:
        self.httpd.drop_after["/" + name] = after_bytes

    @property
    def requests(self) -> list:
        return self.httpd.requests

    def __enter__(self) -> "LoopbackServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

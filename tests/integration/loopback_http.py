"""A real HTTP server on 127.0.0.1 that serves files with Range support, with a Content-Length, chunked or
close-delimited, and can drop a connection mid-body."""

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
        framing = self.server.framing.get(self.path, "length")
        drop_at = self.server.drop_after.pop(self.path, None)
        if framing == "chunked":  # HTTP/1.1 chunked transfer: no length up front; a cut chunk is IncompleteRead
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            sent = body if drop_at is None else body[:drop_at]
            for offset in range(0, len(sent), 4096):
                piece = sent[offset:offset + 4096]
                size = len(piece) if drop_at is None or offset + 4096 < len(sent) else len(piece) + 100  # claims more
                self.wfile.write(f"{size:x}\r\n".encode() + piece)
                if size == len(piece):
                    self.wfile.write(b"\r\n")
            if drop_at is None:
                self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        if framing == "length":
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()  # framing "close": no length; the body ends when the connection closes
        if drop_at is not None:  # send part of the body, then cut the connection
            self.wfile.write(body[:drop_at])
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        self.wfile.write(body)

    def send_response(self, code, message=None) -> None:
        # chunked framing needs HTTP/1.1; everything else stays HTTP/1.0 (one request per connection)
        self.protocol_version = "HTTP/1.1" if self.server.framing.get(self.path) == "chunked" else "HTTP/1.0"
        super().send_response(code, message)


class _Server(http.server.ThreadingHTTPServer):
    root: Path
    ranges: bool
    drop_after: dict[str, int]
    framing: dict[str, str]
    requests: list


class LoopbackServer:
    """``with LoopbackServer(folder) as server: server.url("file.tar")``."""

    def __init__(self, root: Path, ranges: bool = True) -> None:
        self.httpd = _Server(("127.0.0.1", 0), _Handler)
        self.httpd.root, self.httpd.ranges = Path(root), ranges
        self.httpd.drop_after, self.httpd.requests, self.httpd.framing = {}, [], {}
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def drop_once(self, name: str, after_bytes: int) -> None:
        self.httpd.drop_after["/" + name] = after_bytes

    def frame(self, name: str, framing: str) -> None:
        """How ``name``'s body is delimited: ``length`` (Content-Length), ``chunked``, or ``close`` (no length:
        the body ends when the connection closes, so a dropped connection looks like a clean end)."""
        self.httpd.framing["/" + name] = framing

    @property
    def requests(self) -> list:
        return self.httpd.requests

    def __enter__(self) -> "LoopbackServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

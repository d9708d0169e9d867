"""A file server on 127.0.0.1 (never another address) for the download and installer tests.

Each served file is registered with a behaviour: plain, ``cut_at`` (the first response announces the
whole length but stops after N bytes and closes, like a broken connection), ``no_range`` (Range headers
ignored: always 200 with the whole body), or ``delay`` (seconds between 16 KiB chunks: a slow server).
Every request is recorded (path, Range header) so tests can check what the client asked for.
"""
from __future__ import annotations

import http.server
import threading
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple


@dataclass
class Served:
    body: bytes
    cut_at: Optional[int] = None    # first response only
    no_range: bool = False
    delay: float = 0.0
    content_type: str = "application/octet-stream"


class LocalServer:
    def __init__(self) -> None:
        self.files: Dict[str, Served] = {}
        self.requests: List[Tuple[str, Optional[str]]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep the test output quiet
                pass

            def do_GET(self) -> None:  # noqa: N802
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                served = server.files.get(self.path)
                if served is None:
                    self.send_error(404, "Not Found")
                    return
                body, start = served.body, 0
                if rng and not served.no_range and rng.startswith("bytes="):
                    start = int(rng[6:].split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                part = body[start:]
                self.send_header("Content-Length", str(len(part)))
                self.send_header("Content-Type", served.content_type)
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if served.cut_at is not None:
                    cut, served.cut_at = served.cut_at, None
                    self.wfile.write(part[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                for i in range(0, len(part), 16384):
                    if served.delay:
                        time.sleep(served.delay)
                    try:
                        self.wfile.write(part[i:i + 16384])
                    except (BrokenPipeError, ConnectionResetError):
                        return

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def add(self, name: str, body: bytes, **how) -> str:
        self.files["/" + name] = Served(body, **how)
        return f"{self.url}/{name}"

    def __enter__(self) -> "LocalServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

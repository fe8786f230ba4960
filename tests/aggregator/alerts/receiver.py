"""A real local HTTP receiver for notifications (127.0.0.1, free port, its own thread)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    """Records every POST (path, JSON body); `mode` is ok | fail (HTTP 500) | hang (until
    `release` is set)."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, Any]] = []
        self.mode = "ok"
        self.in_flight = 0
        self.release = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if owner.mode == "hang":
                    owner.in_flight += 1
                    owner.release.wait(30)
                    owner.in_flight -= 1
                owner.posts.append((self.path, json.loads(body or b"null")))
                code = 500 if owner.mode == "fail" else 200
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._t = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._t.start()

    def bodies(self) -> list[Any]:
        """The JSON bodies received so far."""
        return [b for _, b in self.posts]

    def close(self) -> None:
        """Stop serving (releases hung requests)."""
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

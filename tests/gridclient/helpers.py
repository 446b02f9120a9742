"""A stand-in node for what the live node does not answer (5xx, answers off contract) and for recording requests."""

import http.server
import json
import threading
import time


class StubNode:
    """A loopback HTTP server that answers every request with one canned answer, and records requests."""

    def __init__(self):
        self.status = 200
        self.body = b"{}"
        self.content_type = "application/json"
        self.delay = 0.0
        self.requests: list[dict] = []
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                stub.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                time.sleep(stub.delay)
                self.send_response(stub.status)
                self.send_header("Content-Type", stub.content_type)
                self.send_header("Content-Length", str(len(stub.body)))
                self.end_headers()
                self.wfile.write(stub.body)

            do_GET = do_POST = _answer

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, status: int, body, content_type: str = "application/json") -> None:
        self.status = status
        self.body = json.dumps(body).encode() if not isinstance(body, bytes) else body
        self.content_type = content_type

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

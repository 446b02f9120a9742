"""A hostile node for the client tests: a loopback HTTP server whose answers break the contract on purpose.

Each path it serves is a `Route`: bytes to answer (a model archive holding a pickle, JSON nested
100,000 deep, an HTML page), an endless body, or no answer at all until the server closes. The tests
start it in a thread (`HostileNode()`), point `GridNodeClient` or the CLI at `node.url`, and check what
the client does with each answer.
"""

import http.server
import threading
from dataclasses import dataclass


@dataclass
class Route:
    """One answer: `body` with `content_type`, sent with a Content-Length unless `endless` (then `body`
    repeats until the client hangs up, and the end of the answer is never reached); `hang` answers
    nothing until the server is closed."""

    body: bytes = b""
    content_type: str = "application/json"
    status: int = 200
    endless: bool = False
    hang: bool = False


class HostileNode:
    """A loopback HTTP/1.0 server answering each path with its `Route` (404 for the others)."""

    def __init__(self, routes: dict[str, Route] | None = None):
        self.routes: dict[str, Route] = dict(routes or {})
        self.requests: list[tuple[str, str, dict]] = []  # (method, request target, headers)
        self.closing = threading.Event()
        node = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                node.requests.append((self.command, self.path, dict(self.headers)))
                route = node.routes.get(self.path)
                if route is None:
                    route = Route(b'{"error": "Not found."}', status=404)
                if route.hang:
                    node.closing.wait()
                    return
                self.send_response(route.status)
                self.send_header("Content-Type", route.content_type)
                if not route.endless:
                    self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()
                try:
                    self.wfile.write(route.body)
                    while route.endless and not node.closing.is_set():
                        self.wfile.write(route.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client stopped reading: what it should do

            do_POST = do_DELETE = do_CONNECT = do_GET

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()


ENDLESS_CHUNK = b"[" + b"0," * 32768


def endless_routes() -> dict[str, Route]:
    """Answers that never end (no Content-Length): a JSON list that never closes, an archive without end."""
    return {
        "/models": Route(ENDLESS_CHUNK, endless=True),
        "/get_model/endless": Route(b"PK\x03\x04" + bytes(65532), "application/octet-stream", endless=True),
    }

"""Slow and idle clients held open against a node while ordinary callers are timed (issue: nginx in front)."""

import contextlib
import http.client
import select
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

# A model upload's head: the body is never sent whole.
BODY_LENGTH = 100_000


def _connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=10)


def _upload_head(host: str) -> bytes:
    return (
        f"POST /serve-model HTTP/1.1\r\nHost: {host}\r\n"
        "Content-Type: multipart/form-data; boundary=slowclient\r\n"
        f"Content-Length: {BODY_LENGTH}\r\n\r\n"
    ).encode()


class Attack:
    """`idle` connections that send nothing, `slow` that send an upload's headers and then one body byte
    every `every` seconds, and `stalled` that send the headers and one body byte, then nothing."""

    def __init__(self, url: str, *, idle: int = 0, slow: int = 0, stalled: int = 0, every: float = 1.0):
        self.url = url
        self.counts = {"idle": idle, "slow": slow, "stalled": stalled}
        self.every = every
        self.sockets: dict[str, list[socket.socket]] = {"idle": [], "slow": [], "stalled": []}
        self._stop = threading.Event()
        self._dripper = threading.Thread(target=self._drip, daemon=True)

    def __enter__(self) -> "Attack":
        head = _upload_head(urlsplit(self.url).netloc)
        for kind, count in self.counts.items():
            for _ in range(count):
                sock = _connect(self.url)
                if kind != "idle":
                    sock.sendall(head + b"-")
                self.sockets[kind].append(sock)
        self._dripper.start()
        return self

    def _drip(self) -> None:
        while not self._stop.wait(self.every):
            for sock in self.sockets["slow"]:
                with contextlib.suppress(OSError):
                    sock.send(b"-")

    def still_open(self, kind: str) -> int:
        """How many of the `kind` connections the server still holds: neither closed nor answered."""
        held = 0
        for sock in self.sockets[kind]:
            readable, _, _ = select.select([sock], [], [], 0)
            held += not readable  # closing or answering makes a socket readable
        return held

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._dripper.join(timeout=10)
        for sockets in self.sockets.values():
            for sock in sockets:
                sock.close()


def ordinary_calls(url: str, *, seconds: float, callers: int = 4, within: float = 2.0) -> tuple[int, int]:
    """(answered, attempted): `GET /models` calls, each on a new connection, made by `callers` threads for
    `seconds`; a call counts as answered when it gets a 200 within `within` seconds."""
    parts = urlsplit(url)

    def caller() -> tuple[int, int]:
        answered = attempted = 0
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            attempted += 1
            started = time.monotonic()
            connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=within)
            try:
                connection.request("GET", "/models")
                response = connection.getresponse()
                response.read()
                answered += response.status == 200 and time.monotonic() - started <= within
            except OSError:
                pass
            finally:
                connection.close()
            time.sleep(0.05)
        return answered, attempted

    with ThreadPoolExecutor(max_workers=callers) as pool:
        results = list(pool.map(lambda _: caller(), range(callers)))
    return sum(r[0] for r in results), sum(r[1] for r in results)

"""Talking to a node over real sockets: whole requests with http.client, and bodies cut short or held back."""

import http.client
import io
import json
import socket
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import torch

from tests.conftest import jit_bytes


def multipart(fields: dict[str, str], files: dict[str, bytes]) -> tuple[bytes, str]:
    """A multipart/form-data body (fields first, then file parts) and its Content-Type."""
    boundary = uuid.uuid4().hex
    body = b""
    for name, value in fields.items():
        body += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    for name, raw in files.items():
        body += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.pt"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        body += raw + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def request(url: str, method: str, path: str, body=None, headers=None, timeout: float = 60) -> tuple[int, object]:
    """One request on its own connection: (status, parsed JSON body, or the raw bytes when not JSON)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        headers = dict(headers or {})
        if isinstance(body, dict):
            body = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        raw = response.read()
    finally:
        connection.close()
    if response.getheader("Content-Type", "").startswith("application/json"):
        return response.status, json.loads(raw)
    return response.status, raw


def post_json(url: str, path: str, body: dict) -> tuple[int, object]:
    return request(url, "POST", path, body)


def post_multipart(url: str, path: str, fields: dict[str, str], files: dict[str, bytes]) -> tuple[int, object]:
    body, content_type = multipart(fields, files)
    return request(url, "POST", path, body, {"Content-Type": content_type})


def raw_exchange(url: str, head: bytes, body: bytes, *, hold: float = 0.0, timeout: float = 30) -> bytes:
    """Send `head` and `body` on a raw socket, then wait for the answer (or `hold` seconds when none
    comes), then close; answers whatever the node sent back (b"" when nothing)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(head + body)
        sock.settimeout(hold or timeout)
        return receive_answer(sock)


def receive_answer(sock: socket.socket) -> bytes:
    """Read one HTTP answer (with a Content-Length) from a socket: less when it closes or times out."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
            if _complete(received):
                break
    except TimeoutError:
        pass
    return received


def _complete(received: bytes) -> bool:
    head, separator, body = received.partition(b"\r\n\r\n")
    if not separator:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def status_of(answer: bytes) -> int | None:
    """The status code of a raw HTTP answer, or None when there is none."""
    if not answer.startswith(b"HTTP/1."):
        return None
    return int(answer.split(b" ", 2)[1])


def json_of(answer: bytes):
    return json.loads(answer.partition(b"\r\n\r\n")[2])


def post_head(path: str, content_type: str, length: int, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {length}\r\n{extra}\r\n"
    ).encode()


def scaled_mlp(scale: float) -> bytes:
    """A TorchScript model whose prediction is `scale` times its input's row sums (two models differ by scale)."""

    class Scaled(torch.nn.Module):
        def __init__(self, factor: float):
            super().__init__()
            self.factor = torch.nn.Parameter(torch.tensor(factor))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.sum(dim=1, keepdim=True) * self.factor

    return jit_bytes(Scaled(scale).eval())


def saved(tensor: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    torch.save(tensor, buffer)
    return buffer.getvalue()


def files_in(folder: Path) -> list[str]:
    """Every file under `folder` (relative names, sorted); none when it does not exist."""
    if not folder.exists():
        return []
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


def wait_for(condition, within: float = 10.0) -> bool:
    """Whether `condition()` came true within `within` seconds (asked every 50 ms)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def eventually_empty(folder: Path, within: float = 10.0) -> list[str]:
    """The files left under `folder` once it empties or `within` seconds pass (a request's clean-up runs
    just after its answer is sent)."""
    deadline = time.monotonic() + within
    while (left := files_in(folder)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left

"""An upload cut short or left hanging past nginx's body timeout never reaches gunicorn: no row, no stored
file, no staged file, and nginx's own temp file is gone; a whole one is stored as usual."""

import socket
import time
from urllib.parse import urlsplit

from tests.conftest import jit_bytes, small_mlp
from tests.reliability.helpers import (
    json_of,
    multipart,
    post_head,
    post_multipart,
    receive_answer,
    request,
    status_of,
)

# Larger than nginx's in-memory body buffer (1 MiB), so nginx writes it to a temp file.
FILLER = b"\0" * (3 * 1024 * 1024)


def upload_body(model_id: str) -> tuple[bytes, str]:
    fields = {"model_id": model_id, "allow_remote_inference": "true"}
    return multipart(fields, {"model": jit_bytes(small_mlp()) + FILLER})


def model_ids(stack) -> list[str]:
    status, answer = request(stack.proxied_url, "GET", "/models")
    assert status == 200
    return answer["models"]


def leftovers(stack) -> list[str]:
    """Files in the node's storage and staging folders and in nginx's body temp folder."""
    folders = (stack.data / "files", stack.data / "tmp", stack.run / "client_body")
    return [str(path) for folder in folders if folder.exists() for path in folder.rglob("*") if path.is_file()]


def connect(stack) -> socket.socket:
    parts = urlsplit(stack.proxied_url)
    return socket.create_connection((parts.hostname, parts.port), timeout=30)


def test_it_leaves_nothing_of_a_cut_upload(stack):
    body, content_type = upload_body("cut")
    with connect(stack) as sock:
        sock.sendall(post_head("/serve-model", content_type, len(body)) + body[: len(body) // 2])
        time.sleep(0.5)  # nginx has written what came to its temp file

    time.sleep(0.5)
    assert "cut" not in model_ids(stack)
    assert leftovers(stack) == []
    assert "/serve-model" not in stack.access_log.read_text()


def test_it_leaves_nothing_of_an_upload_that_stops_past_the_body_timeout(stack):
    body, content_type = upload_body("slow")
    with connect(stack) as sock:
        sock.sendall(post_head("/serve-model", content_type, len(body)))
        for offset in range(0, len(body) // 2, 256 * 1024):  # slowly, then not at all
            sock.sendall(body[offset : offset + 256 * 1024])
            time.sleep(0.5)
        sock.settimeout(10)  # past nginx's body timeout here (3 s)
        stopped = time.monotonic()
        try:
            answer = receive_answer(sock)
        except ConnectionResetError:  # reset_timedout_connection: nginx resets rather than answers
            answer = b""
        waited = time.monotonic() - stopped

    assert status_of(answer) in (None, 408)
    assert waited < 9  # ended by nginx, not by this test's own timeout
    assert "slow" not in model_ids(stack)
    assert leftovers(stack) == []
    assert "/serve-model" not in stack.access_log.read_text()


def test_it_stores_a_whole_upload(stack):
    status, answer = post_multipart(
        stack.proxied_url,
        "/serve-model",
        {"model_id": "whole", "allow_remote_inference": "true"},
        {"model": jit_bytes(small_mlp())},
    )

    assert status == 200, answer
    assert "whole" in model_ids(stack)
    stored = [path for path in (stack.data / "files").rglob("*") if path.is_file()]
    assert len(stored) == 1


def test_it_refuses_a_body_over_the_nodes_upload_limit_before_reading_it(stack):
    over = 4 * 1024**3 + 1  # GRIDNODE_MAX_UPLOAD_BYTES' default, plus one
    uploads_seen = stack.access_log.read_text().count("/serve-model")
    with connect(stack) as sock:
        sock.sendall(post_head("/serve-model", "multipart/form-data; boundary=x", over))
        answer = receive_answer(sock)

    assert status_of(answer) == 413
    # The model endpoints add "success": false where the view answers; refused before it, the plain shape.
    assert json_of(answer)["error"] == f"The request body is larger than this node accepts ({over - 1} bytes)."
    assert set(json_of(answer)) <= {"success", "error"}
    assert stack.access_log.read_text().count("/serve-model") == uploads_seen

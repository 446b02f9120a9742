"""Inputs beyond the fixed-point range of encrypted inference (`ring.MAX_ABS_VALUE`) are refused by the client
before it sends anything: past the range the protocol's products wrap around the ring and the answer is
garbage, and a worker cannot tell (it holds a uniform share of the input, whatever its size).

The "nodes" here are one small HTTP server that records every request and answers 404, so that a refusal
can be told from a request that was made.
"""

import http.server
import json
import threading

import pytest
import torch

from gridclient.cli import USAGE, main
from gridclient.encrypted import EncryptedInferenceFailed, run_encrypted_inference
from smpc_protocol import ring


class Recorder(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), RecordingHandler)
        self.requests: list[tuple[str, str]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class RecordingHandler(http.server.BaseHTTPRequestHandler):
    def _answer(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.requests.append((self.command, self.path))
        body = json.dumps({"error": "Encrypted model not found."}).encode()
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def node():
    server = Recorder()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


OUT_OF_RANGE = {
    "the limit": ring.MAX_ABS_VALUE,
    "minus the limit": -ring.MAX_ABS_VALUE,
    "2^40": 2.0**40,
    "NaN": float("nan"),
    "infinity": float("inf"),
}


@pytest.mark.parametrize("value", OUT_OF_RANGE.values(), ids=OUT_OF_RANGE.keys())
@pytest.mark.parametrize("how", ["workers", "via"])
def test_the_client_refuses_inputs_out_of_range_before_sending_anything(node, value, how):
    inputs = torch.tensor([[0.25, -3.0, 1.0, 0.0], [0.0, 0.0, value, 0.0]], dtype=torch.float64)
    where = {"workers": [node.url, node.url]} if how == "workers" else {"via": node.url}

    with pytest.raises(ring.OutOfRange, match=r"smaller than 2\^29 = 536870912 in magnitude") as caught:
        run_encrypted_inference("shared", inputs, timeout=5, **where)

    assert isinstance(caught.value, ValueError)
    assert node.requests == []


def test_inputs_just_inside_the_range_are_sent(node):
    # The other side of the limit: the same call with values just below it reaches both workers.
    below = ring.MAX_ABS_VALUE - 2.0**-16
    inputs = torch.tensor([[below, -below, 0.0, 1.0]], dtype=torch.float64)

    with pytest.raises(EncryptedInferenceFailed, match="not found"):
        run_encrypted_inference("shared", inputs, workers=[node.url, node.url], timeout=5)

    assert node.requests.count(("POST", "/encrypted-models/shared/inference")) >= 1


def test_the_command_line_refuses_them_too_with_a_usage_error(node, capsys):
    code = main(["--url", node.url, "encrypted-infer", "shared", "--data", "[[0.5, 1e10, 0, 0]]"])

    assert code == USAGE
    assert "smaller than 2^29 = 536870912 in magnitude" in capsys.readouterr().err
    assert node.requests == []

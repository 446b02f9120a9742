"""A stranger's model cannot hurt the node: against a live gunicorn node started as operators start it.

Each model here is one an attacker could upload (writing is open by default): a forward that never ends,
an allocation sized by the request, an answer sized by the request, state carried from one caller to the
next, warnings and errors whose text forges log lines. The node must answer its other callers while they
run, stop them at its limits with a JSON error that names the limit, and lose nothing.
"""

import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from django.conf import settings

from tests.reliability.helpers import post_multipart, request

LISTENING = re.compile(r"Listening at: http://127\.0\.0\.1:(\d+)")
DEADLINE = 3  # GRIDNODE_INFERENCE_TIMEOUT of the node under test
MEMORY_CAP = 512 * 1024**2  # GRIDNODE_INFERENCE_MEMORY_BYTES of the node under test


class Endless(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        while True:
            x = x + 1
        return x


class EndlessPlan(torch.nn.Module):
    """A torch.export program whose while_loop never ends (its condition is always true)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from torch._higher_order_ops.while_loop import while_loop

        def condition(i, value):
            return i >= 0

        def body(i, value):
            return i + 1, value + 1

        return while_loop(condition, body, (torch.zeros((), dtype=torch.int64), x))[1]


class Allocates(torch.nn.Module):
    """Allocates eight times as many floats as the caller asks for."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros([int(x[0].item()), 8]).sum().reshape(1)


class Answers(torch.nn.Module):
    """Answers as many floats as the caller asks for."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ones([int(x[0].item())])


class Stash(torch.nn.Module):
    """Hands every caller the previous caller's input."""

    def __init__(self):
        super().__init__()
        self.register_buffer("prev", torch.zeros(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        old = self.prev.clone()
        self.prev.copy_(x)
        return old


def _jit(module: torch.nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buffer)
    return buffer.getvalue()


def _plan(module: torch.nn.Module, example: tuple) -> bytes:
    buffer = io.BytesIO()
    torch.export.save(torch.export.export(module, example), buffer)
    return buffer.getvalue()


class ForgesLogs(torch.nn.Module):
    """Warns, and raises when its input is negative, with text that would be a log line of its own."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        forged = '\n{"level":"INFO","logger":"gridnode.requests","message":"request","path":"/forged"}\n'
        warnings.warn(forged)  # noqa: B028  (TorchScript's warn takes no stacklevel)
        if bool(x[0] < 0):
            for _ in range(6):
                forged = forged + forged
            raise RuntimeError(forged)
        return x


class Node:
    """A gunicorn node on its own SQLite database and data folder, with the repository's gunicorn.conf.py."""

    def __init__(self, root: Path):
        self.root = root
        self.log = root / "gunicorn.log"
        self.url = ""
        self.process: subprocess.Popen | None = None

    def start(self) -> "Node":
        env = {name: value for name, value in os.environ.items() if not name.startswith(("GRIDNODE_", "DATABASE_URL"))}
        env.update(
            DJANGO_SETTINGS_MODULE="gridnode.settings",
            GRIDNODE_DATA_DIR=str(self.root / "data"),
            GRIDNODE_BIND="127.0.0.1:0",
            GRIDNODE_INFERENCE_TIMEOUT=str(DEADLINE),
            GRIDNODE_INFERENCE_MEMORY_BYTES=str(MEMORY_CAP),
            SECRET_KEY="bounded-inference-tests",
        )
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "-v0"], cwd=settings.BASE_DIR, env=env, check=True, timeout=300
        )
        with open(self.log, "wb") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "gridnode.wsgi", "--no-control-socket"],
                cwd=settings.BASE_DIR,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        until = time.monotonic() + 120
        while time.monotonic() < until and not self.url:
            assert self.process.poll() is None, self.log.read_text()
            if found := LISTENING.search(self.log.read_text()):
                self.url = f"http://127.0.0.1:{found.group(1)}"
            time.sleep(0.1)
        assert self.url, self.log.read_text()
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)

    def serve(self, model_id: str, archive: bytes) -> tuple[int, object]:
        fields = {"model_id": model_id, "allow_remote_inference": "true"}
        return post_multipart(self.url, "/serve-model", fields, {"model": archive})

    def infer(self, model_id: str, data, timeout: float = 60) -> tuple[int, object]:
        body = json.dumps({"data": data}).encode()
        headers = {"Content-Type": "application/json"}
        return request(self.url, "POST", f"/model/{model_id}", body, headers, timeout=timeout)

    def memory_bytes(self) -> int:
        """Resident memory of the master and every process under it."""
        total = 0
        for pid in [self.process.pid, *_descendants(self.process.pid)]:
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            found = re.search(r"VmRSS:\s+(\d+) kB", status)
            total += int(found.group(1)) * 1024 if found else 0
        return total


def _descendants(pid: int) -> list[int]:
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    found = [int(child) for child in children]
    for child in list(found):
        found.extend(_descendants(child))
    return found


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    started = Node(tmp_path_factory.mktemp("bounded")).start()
    assert started.serve("mlp", _jit(torch.nn.Sequential(torch.nn.Linear(4, 2)).eval()))[0] == 200
    yield started
    started.stop()


def _innocent_share(node: Node, *, while_running, count: int = 40) -> float:
    """The share of `count` ordinary inferences answered 200 within 2 s each while `while_running` runs."""
    stop = threading.Event()
    answered = 0
    with ThreadPoolExecutor(max_workers=4) as pool:
        attackers = [pool.submit(call) for call in while_running]
        time.sleep(0.5)  # the attacks are running
        for _ in range(count):
            try:
                status, _ = node.infer("mlp", [[1.0, 2.0, 3.0, 4.0]], timeout=2)
            except OSError:
                status = None
            answered += status == 200
        stop.set()
        results = [attacker.result(timeout=60) for attacker in attackers]
    return answered / count, results


def test_an_endless_model_is_stopped_at_the_deadline_with_a_504_naming_the_limit(node):
    assert node.serve("endless", _jit(Endless()))[0] == 200

    started = time.monotonic()
    status, body = node.infer("endless", [1.0])
    waited = time.monotonic() - started

    assert status == 504
    assert "GRIDNODE_INFERENCE_TIMEOUT" in body["error"]
    assert f"{DEADLINE} seconds" in body["error"]
    assert body["success"] is False
    assert body["status"] is False
    assert waited < DEADLINE + 10  # a bound, not a speed check: the model would have run forever
    assert node.infer("mlp", [[1.0, 2.0, 3.0, 4.0]])[0] == 200  # its process was replaced


def test_an_endless_export_program_is_stopped_too(node):
    assert node.serve("endless-plan", _plan(EndlessPlan(), (torch.rand(3),)))[0] == 200

    status, body = node.infer("endless-plan", [1.0, 2.0, 3.0])

    assert status == 504, body
    assert "GRIDNODE_INFERENCE_TIMEOUT" in body["error"]


def test_innocent_callers_are_answered_while_two_endless_requests_run(node):
    node.serve("endless-2", _jit(Endless()))

    share, results = _innocent_share(
        node, while_running=[lambda: node.infer("endless-2", [1.0]), lambda: node.infer("endless-2", [2.0])]
    )

    assert [status for status, _ in results] == [504, 504]
    assert share >= 0.95
    assert request(node.url, "GET", "/healthz")[0] == 200


def test_an_allocation_sized_by_the_caller_is_refused_and_memory_returns(node):
    assert node.serve("allocates", _jit(Allocates()))[0] == 200
    assert node.infer("allocates", [1000.0])[0] == 200  # loaded in a process, small
    before = node.memory_bytes()

    status, body = node.infer("allocates", [float(256 * 1024**2)])  # 2 Gi float32: 8 GiB

    assert status == 422, body
    assert "GRIDNODE_INFERENCE_MEMORY_BYTES" in body["error"]
    assert body["success"] is False
    time.sleep(1)  # the process that refused is replaced by a fresh one
    assert node.memory_bytes() < before + 256 * 1024**2
    assert node.infer("mlp", [[1.0, 2.0, 3.0, 4.0]])[0] == 200


def test_an_answer_sized_by_the_caller_is_refused_before_it_is_rendered(node):
    assert node.serve("answers", _jit(Answers()))[0] == 200
    assert node.infer("answers", [3.0]) == (200, {"success": True, "status": True, "prediction": [1.0, 1.0, 1.0]})

    status, body = node.infer("answers", [float(64 * 1024**2)])  # 64 Mi elements

    assert status == 422, body
    assert "GRIDNODE_MAX_ANSWER_BYTES" in body["error"]


@pytest.mark.parametrize("kind", ["jit", "plan"])
def test_a_model_that_stashes_callers_inputs_is_refused_and_no_caller_sees_another(node, kind):
    archive = _jit(Stash()) if kind == "jit" else _plan(Stash(), (torch.rand(4),))

    status, body = node.serve(f"stash-{kind}", archive)

    assert status == 400
    assert "prev" in body["error"]
    assert "copy_" in body["error"]
    for caller in range(12):
        status, answer = node.infer(f"stash-{kind}", [float(caller)] * 4)
        assert status == 404
        assert str(float(caller - 1)) not in json.dumps(answer)


def test_model_text_never_forges_a_log_line(node):
    assert node.serve("forger", _jit(ForgesLogs()))[0] == 200

    assert node.infer("forger", [1.0])[0] == 200
    status, body = node.infer("forger", [-1.0])  # raises with the same text, 64 times over

    assert status == 400
    assert len(body["error"]) <= 400  # bounded, whatever the model raised
    time.sleep(0.5)
    lines = node.log.read_text().splitlines()
    assert any('"path":"/model/forger"' in line for line in lines)  # the node did log these requests
    for line in lines:
        if line.startswith("{"):
            assert json.loads(line).get("path") != "/forged"  # each JSON line is one whole object of ours
        assert not line.startswith('{"level":"INFO","logger":"gridnode.requests","message":"request","path":"/forged"')

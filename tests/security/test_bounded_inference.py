"""A stranger's model cannot hurt the node: against a live gunicorn node started as operators start it.

Each model here is one an attacker could upload (writing is open by default): a forward that never ends,
an allocation sized by the request, an answer sized by the request, state carried from one caller to the
next, warnings and errors whose text forges log lines. The node must answer its other callers while they
run, stop them at its limits with a JSON error that names the limit, and lose nothing.
"""

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from tests.conftest import jit_bytes, plan_bytes
from tests.reliability.helpers import request
from tests.security.hostile import (
    Allocates,
    Answers,
    Endless,
    EndlessPlan,
    ForgesLogs,
    GunicornNode,
    Stash,
    innocent_share,
)

DEADLINE = 3  # GRIDNODE_INFERENCE_TIMEOUT of the node under test
MEMORY_CAP = 512 * 1024**2  # GRIDNODE_INFERENCE_MEMORY_BYTES of the node under test


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    started = GunicornNode(
        tmp_path_factory.mktemp("bounded"),
        GRIDNODE_INFERENCE_TIMEOUT=str(DEADLINE),
        GRIDNODE_INFERENCE_MEMORY_BYTES=str(MEMORY_CAP),
    ).start()
    assert started.serve("mlp", jit_bytes(torch.nn.Sequential(torch.nn.Linear(4, 2)).eval()))[0] == 200
    yield started
    started.stop()


def test_an_endless_model_is_stopped_at_the_deadline_with_a_504_naming_the_limit(node):
    assert node.serve("endless", jit_bytes(Endless()))[0] == 200

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
    assert node.serve("endless-plan", plan_bytes(EndlessPlan(), (torch.rand(3),)))[0] == 200

    status, body = node.infer("endless-plan", [1.0, 2.0, 3.0])

    assert status == 504, body
    assert "GRIDNODE_INFERENCE_TIMEOUT" in body["error"]


def test_an_endless_model_is_stopped_on_the_open_inference_protocol_path_too(node):
    node.serve("endless-v2", jit_bytes(Endless()))
    body = {"inputs": [{"name": "input__0", "shape": [1], "datatype": "FP32", "data": [1.0]}]}

    status, answer = request(node.url, "POST", "/v2/models/endless-v2/infer", body, timeout=60)

    assert status == 504
    assert "GRIDNODE_INFERENCE_TIMEOUT" in answer["error"]


def test_innocent_callers_are_answered_while_two_endless_requests_run(node):
    node.serve("endless-2", jit_bytes(Endless()))

    share, results = innocent_share(
        node, while_running=[lambda: node.infer("endless-2", [1.0]), lambda: node.infer("endless-2", [2.0])]
    )

    assert [status for status, _ in results] == [504, 504]
    assert share >= 0.95
    assert request(node.url, "GET", "/healthz")[0] == 200


def test_the_node_answers_while_every_inference_process_is_stuck(node):
    """As many endless requests as processes (cores + 2) stall inference up to the deadline, nothing else."""
    node.serve("endless-4", jit_bytes(Endless()))
    processes = (os.cpu_count() or 1) + 2

    with ThreadPoolExecutor(max_workers=processes) as pool:
        stuck = [pool.submit(node.infer, "endless-4", [float(n)]) for n in range(processes)]
        time.sleep(1)
        assert request(node.url, "GET", "/healthz", timeout=2)[0] == 200
        assert request(node.url, "GET", "/models", timeout=2)[0] == 200
        assert [future.result(timeout=60)[0] for future in stuck] == [504] * processes
    assert node.infer("mlp", [[1.0, 2.0, 3.0, 4.0]])[0] == 200


def test_a_process_whose_threads_all_wait_leaves_new_connections_to_the_others(tmp_path):
    """Two processes of one thread each: while one waits on an endless model, every new connection goes to
    the other (gridnode/workers.py). With gunicorn's own gthread each probe had an even chance of landing
    behind the endless request, so ten probes in a row caught it all but once in a thousand runs."""
    node = GunicornNode(
        tmp_path,
        GRIDNODE_WORKERS="2",
        GRIDNODE_THREADS="1",
        GRIDNODE_INFERENCE_PROCESSES="2",
        GRIDNODE_INFERENCE_TIMEOUT="20",
    ).start()
    try:
        node.serve("endless-1", jit_bytes(Endless()))
        with ThreadPoolExecutor(max_workers=1) as pool:
            stuck = pool.submit(node.infer, "endless-1", [1.0])
            time.sleep(1)
            probes = [request(node.url, "GET", "/healthz", timeout=5)[0] for _ in range(10)]
            assert not stuck.done()
            assert probes == [200] * 10
            assert stuck.result(timeout=60)[0] == 504
    finally:
        node.stop()


def test_an_allocation_sized_by_the_caller_is_refused_and_memory_returns(node):
    assert node.serve("allocates", jit_bytes(Allocates()))[0] == 200
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
    assert node.serve("answers", jit_bytes(Answers()))[0] == 200
    assert node.infer("answers", [3.0]) == (200, {"success": True, "status": True, "prediction": [1.0, 1.0, 1.0]})

    status, body = node.infer("answers", [float(64 * 1024**2)])  # 64 Mi elements

    assert status == 422, body
    assert "GRIDNODE_MAX_ANSWER_BYTES" in body["error"]


@pytest.mark.parametrize("kind", ["jit", "plan"])
def test_a_model_that_stashes_callers_inputs_is_refused_and_no_caller_sees_another(node, kind):
    archive = jit_bytes(Stash()) if kind == "jit" else plan_bytes(Stash(), (torch.rand(4),))

    status, body = node.serve(f"stash-{kind}", archive)

    assert status == 400
    assert "prev" in body["error"]
    assert "copy_" in body["error"]
    for caller in range(12):
        status, answer = node.infer(f"stash-{kind}", [float(caller)] * 4)
        assert status == 404
        assert str(float(caller - 1)) not in json.dumps(answer)


def test_model_text_never_forges_a_log_line(node):
    assert node.serve("forger", jit_bytes(ForgesLogs()))[0] == 200

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

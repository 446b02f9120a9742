"""What a stranger found attacking a live node over HTTP (one test per confirmed finding).

Every test here starts a gunicorn node as operators do (tests/security/hostile.py) and fails while
its finding stands. The models are ones anybody may upload while `write` is open (the default).
"""

import base64
import importlib.util
import json
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from tests.conftest import jit_bytes
from tests.reliability.helpers import request, wait_for
from tests.security.hostile import Allocates, Answers, GunicornNode, ShowsTheGenerator, descendants

DEADLINE = 3  # GRIDNODE_INFERENCE_TIMEOUT of the node under test
PROCESSES = (os.cpu_count() or 1) + 2  # the default number of inference processes
CAP = 256 * 1024**2  # GRIDNODE_INFERENCE_MEMORY_BYTES of the capped node
MLP = [[1.0, 2.0, 3.0, 4.0]]


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    started = GunicornNode(tmp_path_factory.mktemp("stranger"), GRIDNODE_INFERENCE_TIMEOUT=str(DEADLINE)).start()
    assert started.serve("mlp", jit_bytes(torch.nn.Sequential(torch.nn.Linear(4, 2)).eval()))[0] == 200
    yield started
    started.stop()


@pytest.fixture(scope="module")
def capped_node(tmp_path_factory):
    """One inference process with a 256 MiB memory cap, so what it keeps is easy to see."""
    started = GunicornNode(
        tmp_path_factory.mktemp("stranger-capped"),
        GRIDNODE_INFERENCE_MEMORY_BYTES=str(CAP),
        GRIDNODE_INFERENCE_PROCESSES="1",
    ).start()
    yield started
    started.stop()


def fan_out_archive(tmp_path: Path, depth: int) -> bytes:
    """A ~3 KB TorchScript archive whose forward calls f0, f(i) calls f(i+1) twice, down to `depth`.

    Its code is a few lines per level; inlined (as models_app.operators walks every method) it is
    2**depth calls: the walk takes time and memory exponential in `depth`, in the process that loads it.
    """
    source = ["import torch", f"def f{depth}(x: torch.Tensor) -> torch.Tensor:", "    return x + 1"]
    for level in range(depth - 1, -1, -1):
        source += [f"def f{level}(x: torch.Tensor) -> torch.Tensor:", f"    return f{level + 1}(f{level + 1}(x))"]
    source += [
        "class FanOut(torch.nn.Module):",
        "    def forward(self, x: torch.Tensor) -> torch.Tensor:",
        "        return f0(x)",
    ]
    name = f"fan_out_{depth}_{os.getpid()}_{time.monotonic_ns()}"
    path = tmp_path / f"{name}.py"
    path.write_text("\n".join(source) + "\n")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return jit_bytes(module.FanOut())


class Grow(torch.nn.Module):
    """Keeps `x[0]` tensors of 30,000 floats (120 KB each) alive until it answers, then lets them go."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep: list[torch.Tensor] = []
        for _ in range(int(x[0].item())):
            keep.append(torch.ones([30000]))
        return torch.ones([1]) * float(len(keep))


class NothingOut(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[()]:
        return ()


def web_workers(node: GunicornNode) -> list[int]:
    """The gunicorn workers (not the inference processes) of a node."""
    workers = []
    for pid in descendants(node.process.pid):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"gunicorn" in command and b"executor_pool" not in command:
            workers.append(pid)
    return workers


def inference_processes(node: GunicornNode) -> list[int]:
    """The inference processes (the supervisor's children) of a node."""
    found = []
    for pid in descendants(node.process.pid):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
            parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            parent_command = Path(f"/proc/{parent}/cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if b"executor_pool" in command and b"executor_pool" in parent_command:
            found.append(pid)
    return found


def rss(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


# --- A 3 KB archive costs the node time and memory exponential in its call depth --------------------


def test_a_tiny_archive_whose_checks_blow_up_is_refused_while_the_node_answers(node, tmp_path):
    """Upload used to load and check small archives in the web worker itself, with no deadline and no
    memory cap; torch's inlining pass held the GIL meanwhile, so the worker's other threads and its
    heartbeat stopped too (depth 17 ~9 s, depth 18 30 s and 970 MB, each level ~4x longer). Now the
    check runs in an inference process, within archives.load_seconds (5 s for a tiny archive)."""
    archive = fan_out_archive(tmp_path, 17)
    assert len(archive) < 8192

    with ThreadPoolExecutor(max_workers=1) as pool:
        upload = pool.submit(node.serve, "fan-out-upload", archive)
        time.sleep(1)
        probes = [request(node.url, "GET", "/healthz", timeout=4)[0] for _ in range(5)]
        answered = node.infer("mlp", MLP, timeout=5)[0]
        status, body = upload.result(timeout=60)

    assert probes == [200] * 5
    assert answered == 200
    assert status == 400, body
    assert "did not finish loading within 5 seconds" in body["error"]


def test_a_model_slow_to_load_does_not_hold_the_inference_queue_past_the_deadline(node, tmp_path):
    """An inference process loads a model under GRIDNODE_LOAD_TIMEOUT (300 s by default), not the
    inference deadline; this archive loads slowly everywhere and its process does not survive running
    it, so nothing stays cached and every request pays the load again. As many such requests as there
    are inference processes held an innocent caller ~20 s on a node whose deadline is 3 s."""
    status, _ = node.serve("fan-out-load", fan_out_archive(tmp_path, 17))
    if status != 200:
        return  # refused at upload: nothing can load it

    with ThreadPoolExecutor(max_workers=PROCESSES) as pool:
        slow = [pool.submit(node.infer, "fan-out-load", [float(n)], 120) for n in range(PROCESSES)]
        time.sleep(1)
        started = time.monotonic()
        status, _ = node.infer("mlp", MLP, timeout=120)
        waited = time.monotonic() - started
        for future in slow:
            future.result(timeout=300)

    assert status == 200
    assert waited < DEADLINE + 5, f"an innocent inference waited {waited:.1f} s behind model loads"


# --- Memory a request leaves behind raises the next request's cap ----------------------------------


def test_an_inference_process_does_not_keep_more_memory_with_every_request(capped_node):
    """RLIMIT_DATA is set to what the process holds now plus the cap, and freed heap still counts as
    held: each request may take the cap again on top of what the last one freed, so one process grew
    by the cap per request (measured with a 512 MiB cap: 400, 800, ... 2000 MB asked, all answered 200,
    2.2 GB resident afterwards), without end."""
    assert capped_node.serve("grow", jit_bytes(Grow()))[0] == 200
    assert capped_node.infer("grow", [1.0])[0] == 200  # loaded
    time.sleep(0.5)
    (process,) = inference_processes(capped_node)
    base = rss(process)

    statuses = []
    for megabytes in (200, 400, 600, 800, 1000):
        statuses.append(capped_node.infer("grow", [float(megabytes * 1024**2 // 120_000)])[0])
    time.sleep(0.5)
    held = max(rss(pid) for pid in inference_processes(capped_node))

    assert statuses[-1] == 422, f"1000 MB held at once under a {CAP >> 20} MiB cap: {statuses}"
    assert held < base + CAP + 128 * 1024**2, f"the process holds {held >> 20} MiB after {statuses}"


# --- An answer well under GRIDNODE_MAX_ANSWER_BYTES kills its process --------------------------------


@pytest.mark.parametrize("route", ["/model", "/v2"])
def test_a_json_answer_past_the_cap_is_refused_before_it_is_rendered_and_its_process_lives(node, route):
    """8 Mi float32 (32 MiB, half of GRIDNODE_MAX_ANSWER_BYTES's 64 MiB) rendered as JSON: orjson, under
    the 2 GiB RLIMIT_DATA, crashed the process with SIGSEGV (7 Mi elements still worked); the caller got
    500 'The model stopped the process', and every such request cost a process. As JSON it is ~170 MB,
    over the cap: it is refused from its size (20 bytes a number) before rendering; a JSON answer within
    the cap is answered."""
    node.serve("answers", jit_bytes(Answers()))
    inputs = [{"name": "input__0", "shape": [1], "datatype": "FP32", "data": [float(8 * 1024**2)]}]
    for _ in range(2):
        if route == "/model":
            status, body = node.infer("answers", [float(8 * 1024**2)], timeout=120)
        else:
            status, body = request(node.url, "POST", "/v2/models/answers/infer", {"inputs": inputs}, timeout=120)
        assert status == 422, body
        assert "GRIDNODE_MAX_ANSWER_BYTES" in body["error"]

    status, body = node.infer("answers", [float(2 * 1024**2)], timeout=120)  # ~40 MB of JSON
    assert status == 200
    assert len(body["prediction"]) == 2 * 1024**2


# --- A JSON body is parsed in the web worker, without bound, when Django answers ---------------------


@pytest.mark.parametrize(
    ("path", "head"),
    [
        ("/model/mlp?via=django", b'{"data": [[1, 2, 3, 4]], "pad": '),  # any query string skips the fast path
        ("/model/mlp", b'{"pad": '),  # refused before the model ran: Django parses it again itself
    ],
    ids=["query-string", "refused-before-running"],
)
def test_a_json_inference_body_is_not_parsed_into_a_web_workers_memory(node, path, head):
    """The fast path hands the raw body to an inference process (+33 MB for this 30 MiB body), but the
    Django path parses it in the web worker (orjson into Python floats, then json.dumps again for the
    inference process), with no memory cap: +470 MB for 30 MiB, ~16x; GRIDNODE_MAX_BODY_BYTES allows
    512 MiB (~8 GB per request), and most of it stayed in the worker afterwards."""
    count = 30 * 1024**2 // 4
    body = head + b"[" + b"0.1," * (count - 1) + b"0.1]}"
    workers = web_workers(node)
    before = {pid: rss(pid) for pid in workers}
    peak = dict(before)

    with ThreadPoolExecutor(max_workers=1) as pool:
        answer = pool.submit(request, node.url, "POST", path, body, {"Content-Type": "application/json"}, 120)
        while not answer.done():
            for pid in workers:
                peak[pid] = max(peak[pid], rss(pid))
            time.sleep(0.02)
        status, _ = answer.result()

    grown = max(peak[pid] - before[pid] for pid in workers)
    assert status in (200, 400)
    assert grown < 4 * len(body), f"a {len(body) >> 20} MiB body grew a web worker by {grown >> 20} MiB"


# --- The fast path and Django answer one request differently ----------------------------------------


def test_the_fast_path_and_django_answer_a_deeply_nested_unused_field_alike(node):
    """orjson reads 1,000 levels; Django's path re-encodes the body with json.dumps, which stops near
    Python's recursion limit: the same body was 200 on the fast path and 400 "'data' is nested too
    deeply." (about a field that is not 'data') through Django."""
    depth = 1000
    body = ('{"data": [[1, 2, 3, 4]], "extra": ' + "[" * depth + "]" * depth + "}").encode()
    headers = {"Content-Type": "application/json"}

    fast = request(node.url, "POST", "/model/mlp", body, headers)
    django = request(node.url, "POST", "/model/mlp?via=django", body, headers)

    assert fast[0] == django[0], (fast, django)


# --- A model whose output is empty -------------------------------------------------------------------


def test_a_model_that_answers_nothing_is_a_400_and_keeps_its_process(node):
    """`output[0]` on an empty tuple raised IndexError outside the model's try: 500 "The inference failed
    inside the node.", a logged traceback, and the process recycled (its loaded models lost), on every
    request (all_outputs=true answered 200 [] meanwhile)."""
    assert node.serve("nothing", jit_bytes(NothingOut()))[0] == 200

    status, body = node.infer("nothing", [1.0])

    assert status == 400, body
    assert body["success"] is False


# --- The random-number generator carries one caller's data to the next -------------------------------


def test_every_inference_draws_afresh_whatever_earlier_callers_drew(capped_node):
    """Dropout left on (`F.dropout(x, p, True)`) passes the upload checks and draws from the inference
    process's generator, which went on from one inference to the next and started alike in every process:
    a victim moving it on by their secret number of draws, then the attacker's 64 draws, gave the same
    answer every time on a fresh process, so the attacker read the number off it (a table made beforehand
    by playing the victim). One process here; a refused allocation replaces it between the trials. (A
    generator reset to one fixed seed before each run would close that channel but make every caller's
    draws alike and known: this test refuses it too.)"""
    assert capped_node.serve("generator", jit_bytes(ShowsTheGenerator()))[0] == 200
    assert capped_node.serve("allocates", jit_bytes(Allocates()))[0] == 200

    seen = []
    for _ in range(2):
        before = inference_processes(capped_node)
        assert capped_node.infer("allocates", [float(256 * 1024**2)])[0] == 422  # 8 GiB: the process is replaced
        assert wait_for(lambda before=before: inference_processes(capped_node) not in ([], before))
        assert capped_node.infer("generator", [3.0])[0] == 200  # the victim's secret: 3
        status, body = capped_node.infer("generator", [0.0])  # the attacker
        assert status == 200, body
        assert set(body["prediction"]) <= {0.0, 2.0}  # dropout did run
        seen.append(body["prediction"])

    assert seen[0] != seen[1], "the same victim gave the attacker the same answer twice"


# --- A v2 shape that no tensor has -------------------------------------------------------------------

HUGE = 2**63 - 1


@pytest.mark.parametrize(
    ("shape", "data"),
    [
        ([1] + [HUGE] * 100_000, [1]),  # math.prod took 35 s: the process was killed at its deadline, a 504
        ([1] + [HUGE] * 1000, [1]),  # the count's text passed Python's 4,300 digits: a 500
        ([0, 2**64 - 1], []),  # numpy: "Maximum allowed dimension exceeded", a 500
        ([0, HUGE, HUGE], []),  # numpy: "array is too big", a 500
        ([1] * 100, [1]),  # numpy makes at most 64 dimensions, a 500
        ([0, 2**60], []),  # numpy: 2**60 FP64 take more than 2**63 bytes, a 500
        ([0] * 300_000, [1]),  # the error quoted the whole shape back
    ],
    ids=["100k-huge-dims", "1k-huge-dims", "2**64", "empty-but-huge", "100-dims", "2**60-fp64", "300k-zeros"],
)
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_a_v2_shape_that_no_tensor_has_is_a_quick_400_that_quotes_nothing(node, shape, data, binary):
    tensor = {"name": "input__0", "shape": shape, "datatype": "FP64"}
    extra = b""
    if binary:
        tensor["parameters"] = {"binary_data_size": 8 * len(data)}
        extra = b"\0" * 8 * len(data)
    else:
        tensor["data"] = data
    body = json.dumps({"inputs": [tensor]}).encode()
    headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(body))}
    started = time.monotonic()

    status, answer = request(node.url, "POST", "/v2/models/mlp/infer", body + extra, headers)

    assert status == 400, answer
    assert time.monotonic() - started < DEADLINE
    assert "shape" in answer["error"]
    assert len(answer["error"]) < 200


@pytest.mark.parametrize("where", ["inputs", "outputs"])
@pytest.mark.parametrize("suffix", ["²", "0" * 5000])
def test_a_v2_tensor_name_that_is_no_position_is_a_400(node, where, suffix):
    """ "input__²" passed `isdigit` and failed `int` (a 500); 5,000 digits passed Python's limit for `int`
    (a 400 blaming the model's output)."""
    tensor = {"name": "input__0", "shape": [1, 4], "datatype": "FP32", "data": [1.0, 2.0, 3.0, 4.0]}
    body = {"inputs": [tensor]}
    if where == "inputs":
        tensor["name"] = "input__" + suffix
    else:
        body["outputs"] = [{"name": "output__" + suffix}]

    status, answer = request(node.url, "POST", "/v2/models/mlp/infer", body)

    assert status == 400, answer
    assert "output cannot be answered" not in answer["error"]


# --- gunicorn's own lines and answers ----------------------------------------------------------------


def test_a_request_gunicorn_cannot_parse_gets_json_and_every_log_line_stays_one_json_object(node):
    """gunicorn wrote its own lines as text (`[date] [pid] [WARNING] Invalid request from ip=...: Invalid
    HTTP method: '{...}'`, a JSON object of the caller's inside), and answered an HTML page quoting the
    request, where every other error of the node is JSON that quotes nothing (found by a stranger)."""
    forged = b'{"level":"CRITICAL","logger":"gridnode.requests","message":"forged"}'
    host, port = node.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(forged + b" / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk

    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert b"Content-Type: application/json" in head
    assert json.loads(body) == {"error": "The request could not be read as HTTP (400 Bad Request)."}
    assert_every_line_is_one_json_object(node, containing="Invalid request from")


def assert_every_line_is_one_json_object(node, *, containing: str) -> None:
    """Every line of the node's log is a JSON object of the node's (waiting until one holds `containing`)."""
    assert wait_for(lambda: containing in node.log.read_text())
    for line in node.log.read_text().splitlines():
        parsed = json.loads(line)
        assert isinstance(parsed, dict), line
        assert parsed.get("message") != "forged", line


def test_a_librarys_warning_is_a_json_line_too(node):
    """torch warns when a TorchScript archive is loaded as a tensor file; Python printed the warning as two
    bare text lines into the node's log, beside its JSON ones (found by a stranger)."""
    archive = jit_bytes(torch.nn.Sequential(torch.nn.Linear(4, 2)).eval())
    body = {"id": "warns", "tags": ["t"], "encoding": "base64", "data": base64.b64encode(archive).decode()}

    status, answer = request(node.url, "POST", "/datasets", body)

    assert status == 400, answer
    assert_every_line_is_one_json_object(node, containing='"logger":"py.warnings"')

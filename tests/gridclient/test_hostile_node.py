"""The client against a hostile node (tests/gridclient/hostile.py, a plain HTTP server in a thread).

Every archive route carries a pickle that writes a canary file when unpickled: `download_model` refuses
each one with `ModelRefused` before torch reads it, and the canary is never written. Endless bodies stop
at the client's limits (`AnswerTooLarge`, no partial file, bounded memory measured in a fresh process),
JSON nested 100,000 deep and answers of the wrong type are `ServerError`s, a node that hangs is a
timeout: in the API the documented exception, on the command line exit 10 (3 for the timeout), never
a traceback.
"""

import contextlib
import io
import json
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from gridclient import (
    AnswerTooLarge,
    GridNodeClient,
    GridNodeError,
    ModelRefused,
    NodeUnreachable,
    ServerError,
    cli,
)
from tests.conftest import jit_bytes, plan_bytes, small_mlp
from tests.gridclient.hostile import HostileNode, Route, endless_routes

ROOT = Path(__file__).resolve().parents[2]
X = torch.rand(2, 4)
ARCHIVE = "application/octet-stream"


class WritesCanary:
    """Unpickling this creates a file: proof that the payload's code ran on the client."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def torch_saved(value, **options) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer, **options)
    return buffer.getvalue()


def entries_of(archive: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(archive)) as source:
        return {name: source.read(name) for name in source.namelist()}


def zip_of(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def named(entries, suffix: str) -> str:
    return next(name for name in entries if name.endswith(suffix))


def plan_with_pickled_weight(canary) -> bytes:
    """The reported attack: a .pt2 whose weight entry is marked use_pickle, its bytes a code-running pickle."""
    entries = entries_of(plan_bytes(small_mlp(), (X,)))
    config_name = named(entries, "model_weights_config.json")
    config = json.loads(entries[config_name])
    first = next(iter(config["config"].values()))
    first["use_pickle"] = True
    entries[config_name] = json.dumps(config).encode()
    entries[named(entries, f"data/weights/{first['path_name']}")] = torch_saved(WritesCanary(canary))
    return zip_of(entries)


def plan_with_pickled_sample_inputs(canary) -> bytes:
    entries = entries_of(plan_bytes(small_mlp(), (X,)))
    entries[named(entries, "data/sample_inputs/model.pt")] = torch_saved((WritesCanary(canary),))
    return zip_of(entries)


def jit_with_pickle(canary, entry: str) -> bytes:
    """A TorchScript archive with a foreign pickle as `entry` (replacing it, or beside the others)."""
    entries = entries_of(jit_bytes(small_mlp()))
    root = named(entries, "/data.pkl").split("/")[0]
    entries[f"{root}/{entry}"] = pickle.dumps(WritesCanary(canary), protocol=2)
    return zip_of(entries)


class Prints(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        print(x)
        return x


# Every way an archive from the node can carry code: (archive, what the refusal says).
HOSTILE_ARCHIVES = {
    "pt2-weight-use-pickle": (plan_with_pickled_weight, "holds pickled objects"),
    "pt2-pickled-sample-inputs": (plan_with_pickled_sample_inputs, "sample inputs are not plain tensors"),
    "jit-data-pkl": (lambda canary: jit_with_pickle(canary, "data.pkl"), "name a global"),
    "jit-extra-pickle": (lambda canary: jit_with_pickle(canary, "extra/payload.pkl"), "name a global"),
    "raw-pickle": (lambda canary: pickle.dumps(WritesCanary(canary)), "not a zip file"),
    "legacy-torch-save": (
        lambda canary: torch_saved(WritesCanary(canary), _use_new_zipfile_serialization=False),
        "not a zip file",
    ),
    "torch-save-zip": (lambda canary: torch_saved({"state": WritesCanary(canary)}), "neither a TorchScript"),
    "zip-of-a-pickle": (
        lambda canary: zip_of({"archive/data.pkl": pickle.dumps(WritesCanary(canary))}),
        "neither a TorchScript",
    ),
    "operator-outside-the-allowlist": (lambda canary: jit_bytes(Prints()), "operator this node does not run"),
}


@pytest.fixture
def hostile():
    node = HostileNode()
    yield node
    node.close()


@pytest.fixture
def canary(tmp_path) -> Path:
    return tmp_path / "canary"


@pytest.fixture
def folder(tmp_path) -> Path:
    """An empty folder to download into (tmp_path holds the node settings' folders)."""
    path = tmp_path / "downloads"
    path.mkdir()
    return path


def cli_run(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# -- archives that would run code ----------------------------------------------------------------------


@pytest.mark.parametrize("name", list(HOSTILE_ARCHIVES))
def test_download_model_refuses_every_hostile_archive_and_runs_nothing(hostile, canary, name):
    build, reason = HOSTILE_ARCHIVES[name]
    hostile.routes["/get_model/m"] = Route(build(canary), ARCHIVE)

    try:
        GridNodeClient(hostile.url, progress=False).download_model("m")
    except Exception as exc:  # whatever it raised, the canary is checked first
        refused = exc
    else:
        refused = None

    assert not canary.exists(), "the archive's pickle ran on the client"
    assert isinstance(refused, ModelRefused), refused
    assert reason in refused.message
    assert refused.message.startswith("The node's archive of 'm' is refused: ")
    assert isinstance(refused, ServerError)
    assert cli.exit_code(refused) == cli.NODE_ERROR


def test_the_canary_is_real_torch_export_load_runs_the_pickle(canary, tmp_path):
    """Without the checks, the reported archive does write the canary: the test above would see it."""
    path = tmp_path / "model.pt2"
    path.write_bytes(plan_with_pickled_weight(canary))

    # torch may fail after unpickling the weight: the point is the canary.
    with contextlib.suppress(Exception):
        torch.export.load(path)

    assert canary.exists()


def test_download_model_still_loads_what_the_node_would_host(hostile):
    module = small_mlp()
    hostile.routes["/get_model/jit"] = Route(jit_bytes(module), ARCHIVE)
    hostile.routes["/get_model/plan"] = Route(plan_bytes(module, (X,)), ARCHIVE)
    client = GridNodeClient(hostile.url, progress=False)

    script, program = client.download_model("jit"), client.download_model("plan")

    with torch.no_grad():
        assert torch.allclose(script(X), module(X))
        assert torch.allclose(program.module()(X), module(X))


def test_download_archive_still_writes_the_bytes_as_they_are(hostile, canary, tmp_path):
    """download_archive is bytes only: it loads nothing, so it refuses nothing."""
    archive = plan_with_pickled_weight(canary)
    hostile.routes["/get_model/m"] = Route(archive, ARCHIVE)

    size = GridNodeClient(hostile.url, progress=False).download_archive("m", tmp_path / "copy.pt2")

    assert size == len(archive) == (tmp_path / "copy.pt2").stat().st_size
    assert not canary.exists()


@pytest.mark.parametrize("name", list(HOSTILE_ARCHIVES))
@pytest.mark.parametrize("output", ["file", "stdout"])
def test_the_cli_saves_no_hostile_archive(hostile, canary, capsysbinary, folder, name, output):
    """`download-model` checks what the node answered before it writes anything (save_model): a refused
    archive is exit 10, the refusal on stderr, and nothing written, to the file or to stdout."""
    build, reason = HOSTILE_ARCHIVES[name]
    hostile.routes["/get_model/m"] = Route(build(canary), ARCHIVE)
    target = "-" if output == "stdout" else str(folder / "copy.pt")

    code = cli.main(["--url", hostile.url, "download-model", "m", "-o", target])

    out, err = capsysbinary.readouterr()
    assert code == cli.NODE_ERROR
    assert err.decode().startswith("error: The node's archive of 'm' is refused: ")
    assert reason in err.decode()
    assert out == b""
    assert list(folder.iterdir()) == []
    assert not canary.exists()


def test_the_cli_saves_a_checked_archive_whole_and_unchecked_on_request(hostile, canary, capsys, folder):
    good, bad = jit_bytes(small_mlp()), plan_with_pickled_weight(canary)
    hostile.routes["/get_model/good"] = Route(good, ARCHIVE)
    hostile.routes["/get_model/bad"] = Route(bad, ARCHIVE)

    code, out, _ = cli_run(capsys, "--url", hostile.url, "download-model", "good", "-o", str(folder / "good.pt"))
    assert (code, out) == (cli.OK, f"Wrote {len(good)} bytes to {folder / 'good.pt'}\n")
    assert (folder / "good.pt").read_bytes() == good

    code, _, _ = cli_run(
        capsys, "--url", hostile.url, "download-model", "bad", "-o", str(folder / "bad.pt2"), "--unchecked"
    )
    assert code == cli.OK
    assert (folder / "bad.pt2").read_bytes() == bad
    assert sorted(path.name for path in folder.iterdir()) == ["bad.pt2", "good.pt"]  # no temporary folder left
    assert not canary.exists()


# -- answers without end -------------------------------------------------------------------------------


def test_an_endless_json_answer_stops_at_max_answer_bytes(hostile):
    hostile.routes.update(endless_routes())

    with pytest.raises(AnswerTooLarge) as caught:
        GridNodeClient(hostile.url, progress=False, max_answer_bytes=1_000_000).models()

    assert caught.value.limit == 1_000_000
    assert str(caught.value) == (
        "The node's answer is larger than this client reads (max_answer_bytes=1000000 bytes). (HTTP 200)"
    )


def test_a_declared_length_past_max_answer_bytes_is_refused_before_reading(hostile):
    hostile.routes["/models"] = Route(b'{"models": []}' + b" " * 2000)

    with pytest.raises(AnswerTooLarge, match="answer is 2014 bytes, which is larger"):
        GridNodeClient(hostile.url, progress=False, max_answer_bytes=1024).models()


def test_an_endless_download_stops_at_max_bytes_and_leaves_no_file(hostile, folder):
    hostile.routes.update(endless_routes())
    client = GridNodeClient(hostile.url, progress=False)

    with pytest.raises(AnswerTooLarge, match=r"The download is larger than this client reads \(max_bytes=5000000"):
        client.download_archive("endless", folder / "copy.pt", max_bytes=5_000_000)
    with pytest.raises(AnswerTooLarge):
        client.download_model("endless", max_bytes=5_000_000)

    assert list(folder.iterdir()) == []


def test_a_download_declaring_more_than_max_bytes_is_refused_before_reading(hostile, folder):
    hostile.routes["/get_model/m"] = Route(jit_bytes(small_mlp()), ARCHIVE)

    with pytest.raises(AnswerTooLarge, match=r"The download is \d+ bytes, which is larger"):
        GridNodeClient(hostile.url, progress=False).download_archive("m", folder / "copy.pt", max_bytes=1000)

    assert list(folder.iterdir()) == []


def test_the_cli_exits_10_for_endless_answers_and_leaves_no_file(hostile, capsys, folder):
    hostile.routes.update(endless_routes())
    target = folder / "copy.pt"

    code, out, err = cli_run(capsys, "--url", hostile.url, "--max-answer-bytes", "100000", "models")
    assert (code, out) == (cli.NODE_ERROR, "")
    assert (
        err == "error: The node's answer is larger than this client reads (max_answer_bytes=100000 bytes). (HTTP 200)\n"
    )

    code, out, err = cli_run(
        capsys, "--url", hostile.url, "download-model", "endless", "-o", str(target), "--max-bytes", "100000"
    )
    assert (code, out) == (cli.NODE_ERROR, "")
    assert err.startswith("error: The download is larger than this client reads (max_bytes=100000 bytes).")
    assert list(folder.iterdir()) == []


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak memory is read from /proc")
@pytest.mark.parametrize(
    ("call", "limit", "bound"),
    [
        # The default bound on a JSON answer (256 MiB) holds: a node answering without end used 15.3 GiB.
        ("models", "", 2 * 256 * 1024**2),
        ("models", str(8 * 1024**2), 64 * 1024**2),
        # Downloads go to disk a chunk at a time: memory stays flat whatever max_bytes allows.
        ("download_archive", str(64 * 1024**2), 32 * 1024**2),
        ("download_model", str(64 * 1024**2), 32 * 1024**2),
    ],
)
def test_memory_stays_bounded_against_an_endless_answer(hostile, folder, call, limit, bound):
    hostile.routes.update(endless_routes())

    # A fresh process: its peak is the client's alone (the hostile node runs in this one).
    result = subprocess.run(
        [sys.executable, "-m", "tests.gridclient.answer_memory", hostile.url, call, str(folder), limit],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout)
    print(f"{call} (limit {limit or 'default'}): peak growth {measured['growth'] / 1024**2:.1f} MiB")
    assert (measured["error"], measured["exit"]) == ("AnswerTooLarge", cli.NODE_ERROR)
    assert measured["growth"] < bound
    assert list(folder.iterdir()) == []


# -- answers that cannot be read -----------------------------------------------------------------------

DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize(
    ("route", "message"),
    [
        (Route(DEEP), "The node's answer nests JSON deeper than 200 levels."),
        (
            Route(b'{"models": ' + b"[" * 300 + b"]" * 300 + b"}"),
            "The node's answer nests JSON deeper than 200 levels.",
        ),
        (Route(b"<html><body>Sign in to the network</body></html>", "text/html"), "The node's answer is not JSON."),
        (Route(b'{"models": "\xff\xfe"}'), "The node's answer is not JSON."),
        (Route(b"[1, 2]"), "The node's answer has no 'models'."),
    ],
    ids=["100000-deep", "300-deep-inside", "html", "not-utf-8", "off-contract"],
)
def test_an_unreadable_json_answer_is_a_server_error_and_exit_10(hostile, capsys, route, message):
    hostile.routes["/models"] = route

    with pytest.raises(ServerError) as caught:
        GridNodeClient(hostile.url, progress=False).models()
    code, out, err = cli_run(capsys, "--url", hostile.url, "models")

    assert caught.value.message == message
    assert (code, out, err) == (cli.NODE_ERROR, "", f"error: {message} (HTTP 200)\n")


def test_a_deep_error_answer_keeps_its_status(hostile, capsys):
    hostile.routes["/models"] = Route(DEEP[:60_000] + DEEP[-60_000:], status=500)

    code, out, err = cli_run(capsys, "--url", hostile.url, "models")

    assert (code, err) == (cli.NODE_ERROR, "error: HTTP 500 Internal Server Error (HTTP 500)\n")


@pytest.mark.parametrize("content_type", ["application/json", "text/html; charset=utf-8", "text/plain"])
def test_a_download_of_the_wrong_type_is_refused(hostile, capsys, folder, content_type):
    hostile.routes["/get_model/m"] = Route(b'{"serialized_model": "PK"}', content_type)
    kind = "JSON" if content_type == "application/json" else content_type.split(";")[0]

    with pytest.raises(ServerError, match=f"The node answered {kind} instead of the raw archive"):
        GridNodeClient(hostile.url, progress=False).download_model("m")
    code, _, err = cli_run(capsys, "--url", hostile.url, "download-model", "m", "-o", str(folder / "copy.pt"))

    assert code == cli.NODE_ERROR
    assert err == f"error: The node answered {kind} instead of the raw archive. (HTTP 200)\n"
    assert list(folder.iterdir()) == []


def test_an_answer_that_is_not_http_is_a_server_error(tmp_path, capsys):
    """A server that answers garbage instead of a status line: unreadable, not unreachable."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"

    def answer_garbage():
        for _ in range(2):
            connection, _ = listener.accept()
            with connection:
                connection.recv(65536)
                connection.sendall(b"SSH-2.0-OpenSSH_9.6\r\n" + b"x" * 70000 + b"\r\n\r\n")

    thread = threading.Thread(target=answer_garbage, daemon=True)
    thread.start()
    try:
        with pytest.raises(ServerError, match="is not valid HTTP"):
            GridNodeClient(url, progress=False).models()
        assert cli_run(capsys, "--url", url, "models")[0] == cli.NODE_ERROR
    finally:
        thread.join()
        listener.close()


# -- a node that hangs ---------------------------------------------------------------------------------


def test_a_node_that_never_answers_times_out(hostile, capsys, tmp_path):
    hostile.routes["/models"] = Route(hang=True)
    hostile.routes["/get_model/m"] = Route(hang=True)
    client = GridNodeClient(hostile.url, progress=False, timeout=0.3)

    with pytest.raises(NodeUnreachable, match="no answer within 0.3 seconds"):
        client.models()
    with pytest.raises(NodeUnreachable, match="no answer within 0.3 seconds"):
        client.download_model("m")
    code, _, err = cli_run(capsys, "--url", hostile.url, "--timeout", "0.3", "models")

    assert code == cli.UNREACHABLE
    assert err == f"error: Could not reach the grid node at {hostile.url}: no answer within 0.3 seconds\n"


def test_a_node_that_stops_in_the_middle_of_an_answer_times_out(folder):
    """Headers and a first part of the body, then nothing: the read times out, no partial file is left."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    done = threading.Event()

    def stall():
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n")
            connection.sendall(b"Content-Length: 1000000\r\n\r\n" + b"PK\x03\x04" + bytes(1000))
            done.wait()

    thread = threading.Thread(target=stall, daemon=True)
    thread.start()
    try:
        with pytest.raises(NodeUnreachable, match="no answer within 0.3 seconds"):
            GridNodeClient(url, progress=False, timeout=0.3).download_archive("m", folder / "copy.pt")
    finally:
        done.set()
        thread.join()
        listener.close()
    assert list(folder.iterdir()) == []


def test_every_new_failure_is_a_grid_node_error():
    assert issubclass(AnswerTooLarge, ServerError)
    assert issubclass(ModelRefused, ServerError)
    assert issubclass(ServerError, GridNodeError)

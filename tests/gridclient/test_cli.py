"""The command line, in process (`gridclient.cli.main`) and as real processes (`python -m gridclient`)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from datasets_app.models import Dataset
from gridclient import cli
from models_app.models import HostedModel
from smpc_app.models import EncryptedModel
from tests.conftest import TwoInputs, jit_bytes, small_mlp

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
X = [[0.5, -1.0, 2.0, 0.25]]


@pytest.fixture
def run(node, capsys):
    """Run one command against the live node; answer (exit code, stdout, stderr)."""

    def command(*args: str, url: str | None = None) -> tuple[int, str, str]:
        code = cli.main(["--url", url or node, *args])
        out, err = capsys.readouterr()
        return code, out, err

    return command


@pytest.fixture
def archive(tmp_path) -> Path:
    path = tmp_path / "mlp.pt"
    path.write_bytes(jit_bytes(small_mlp()))
    return path


@pytest.fixture
def served(run, archive):
    code, _, err = run("serve-model", str(archive), "--id", "mlp", "--allow-download", "--allow-inference")
    assert code == cli.OK, err
    return "mlp"


def test_it_serves_a_model_with_its_flags(run, archive):
    code, out, err = run("serve-model", str(archive), "--id", "mlp", "--allow-inference")

    assert (code, out, err) == (0, "Model saved with id: mlp\n", "")
    stored = HostedModel.objects.get(model_id="mlp")
    assert (stored.allow_download, stored.allow_remote_inference) == (False, True)


def test_it_lists_and_deletes_models(run, served):
    assert run("models") == (0, "mlp\n", "")
    assert run("delete-model", "mlp") == (0, "Model deleted: mlp\n", "")
    assert run("models") == (0, "", "")


def test_it_downloads_the_raw_archive(run, served, archive, tmp_path):
    target = tmp_path / "copy.pt"

    code, out, _ = run("download-model", "mlp", "-o", str(target))

    assert code == 0
    assert out == f"Wrote {archive.stat().st_size} bytes to {target}\n"
    assert target.read_bytes() == archive.read_bytes()


def test_it_downloads_to_stdout(node, client, archive, capsysbinary):
    client.serve_model(archive, "mlp", allow_download=True)

    code = cli.main(["--url", node, "download-model", "mlp", "-o", "-"])

    assert code == 0
    assert capsysbinary.readouterr().out == archive.read_bytes()


def test_it_runs_inference_on_inline_json(run, served):
    code, out, _ = run("infer", "mlp", "--data", json.dumps(X))

    assert code == 0
    with torch.no_grad():
        assert torch.allclose(torch.tensor(json.loads(out)), small_mlp()(torch.tensor(X)), atol=1e-6)


def test_inline_json_longer_than_a_file_name_may_be_is_still_data(run, served):
    rows = [[0.123456789, -1.0, 2.0, 0.25]] * 100  # about 3,000 characters: no file system takes that as a name

    code, out, err = run("infer", "mlp", "--data", json.dumps(rows))

    assert code == 0, err
    assert len(json.loads(out)) == 100


def test_it_runs_inference_on_a_tensor_file(run, tmp_path):
    (tmp_path / "two.pt").write_bytes(jit_bytes(TwoInputs()))
    run("serve-model", str(tmp_path / "two.pt"), "--id", "two", "--allow-inference")
    torch.save([torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])], tmp_path / "inputs.pt")

    code, out, _ = run("infer", "two", "--data", str(tmp_path / "inputs.pt"), "--all-outputs")

    assert code == 0
    assert json.loads(out) == [[4.0, 6.0], [3.0, 8.0]]


def test_it_uploads_a_dataset_and_searches_it(run, tmp_path):
    torch.save(torch.rand(4, 2), tmp_path / "data.pt")

    code, out, _ = run(
        "upload-dataset", str(tmp_path / "data.pt"), "--tag", "#a", "--tag", "#b", "--description", "demo", "--id", "d1"
    )

    assert code == 0
    assert json.loads(out)["shape"] == [4, 2]
    assert Dataset.objects.get(dataset_id="d1").description == "demo"
    assert run("tags") == (0, "#a\n#b\n", "")
    assert run("search", "#a", "#b") == (cli.OK, "true\n", "")
    assert run("search", "#a", "#nope") == (cli.NO_MATCH, "false\n", "")


def test_it_registers_and_searches_encrypted_models(run):
    workers = ["--worker", "http://alice.example:5000", "--worker", "http://bob.example:5000"]
    code, _, _ = run("register-encrypted", "enc", *workers, "--crypto-provider", "http://crypto.example:5000")
    assert code == 0
    assert EncryptedModel.objects.filter(model_id="enc").exists()

    code, out, _ = run("search-encrypted", "enc")

    assert code == 0
    assert json.loads(out) == {
        "workers": ["http://alice.example:5000", "http://bob.example:5000"],
        "crypto_provider": ["http://crypto.example:5000"],
    }


def test_it_exits_4_for_an_unknown_id(run):
    assert run("delete-model", "ghost") == (cli.NOT_FOUND, "", "error: Model not found! (HTTP 404)\n")
    assert run("search-encrypted", "ghost") == (cli.NOT_FOUND, "", "error: Model ID not found! (HTTP 404)\n")


def test_it_exits_5_when_the_owner_does_not_allow_it(run, archive, tmp_path):
    run("serve-model", str(archive), "--id", "private")

    code, out, err = run("download-model", "private", "-o", str(tmp_path / "copy.pt"))

    assert (code, out) == (cli.FORBIDDEN, "")
    assert err == "error: You're not allowed to download this model. (HTTP 403)\n"
    assert not (tmp_path / "copy.pt").exists()
    assert run("infer", "private", "--data", "[1]")[0] == cli.FORBIDDEN


def test_it_exits_6_for_a_taken_id(run, served, archive):
    code, _, err = run("serve-model", str(archive), "--id", "mlp")

    assert (code, err) == (cli.CONFLICT, "error: Model with id: mlp already exists. (HTTP 409)\n")


def test_it_exits_7_when_the_node_refuses_the_request(run, tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"junk")

    code, _, err = run("serve-model", str(tmp_path / "junk.pt"), "--id", "junk")

    assert code == cli.INVALID_REQUEST
    assert err.startswith("error: The model is not a TorchScript or torch.export archive")
    assert err.endswith("(HTTP 400)\n")


def test_it_exits_8_when_the_node_finds_it_too_large(run, archive, settings):
    settings.GRIDNODE_MAX_MODEL_BYTES = 1024

    assert run("serve-model", str(archive), "--id", "big")[0] == cli.TOO_LARGE


def test_it_exits_9_for_401_and_10_for_a_failing_node(stub, capsys):
    stub.answer(401, {"error": "Invalid token."})
    assert cli.main(["--url", stub.url, "models"]) == cli.UNAUTHORIZED
    assert capsys.readouterr().err == "error: Invalid token. (HTTP 401)\n"

    stub.answer(503, b"unavailable", content_type="text/plain")
    assert cli.main(["--url", stub.url, "models"]) == cli.NODE_ERROR
    assert capsys.readouterr().err == "error: HTTP 503 Service Unavailable (HTTP 503)\n"


def test_it_exits_3_when_the_node_is_unreachable(run, closed_port_url):
    code, out, err = run("models", url=closed_port_url)

    assert (code, out) == (cli.UNREACHABLE, "")
    assert err.startswith(f"error: Could not reach the grid node at {closed_port_url}: connection refused")


@pytest.mark.parametrize(
    "args",
    [
        ["serve-model", "missing.pt", "--id", "x"],
        ["serve-model", "model.pt"],  # no --id
        ["infer", "mlp", "--data", "neither-a-file-nor-json"],
        ["frobnicate"],
        [],
    ],
)
def test_it_exits_2_for_bad_arguments(run, args):
    code, out, err = run(*args)

    assert (code, out) == (cli.USAGE, "")
    assert err.startswith(("error: ", "usage: "))


def test_it_exits_2_for_a_data_file_that_is_not_a_tensor(run, served, tmp_path):
    (tmp_path / "data.pt").write_bytes(b"junk")

    code, _, err = run("infer", "mlp", "--data", str(tmp_path / "data.pt"))

    assert (code, err) == (cli.USAGE, f"error: {tmp_path / 'data.pt'} is not a tensor saved with torch.save.\n")


def test_it_reads_the_url_from_the_environment(node, served, monkeypatch, capsys):
    monkeypatch.setenv("GRIDNODE_URL", node)

    assert cli.main(["models"]) == 0
    assert capsys.readouterr().out == "mlp\n"


def test_its_help_documents_the_exit_codes(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "exit codes:" in out
    assert "GRIDNODE_TOKEN" in out


def test_it_runs_as_python_m_gridclient(node, archive):
    def gridclient(*args: str) -> subprocess.CompletedProcess:
        environment = {**os.environ, "GRIDNODE_URL": node}
        return subprocess.run(
            [sys.executable, "-m", "gridclient", *args], cwd=ROOT, env=environment, capture_output=True, text=True
        )

    served = gridclient("serve-model", str(archive), "--id", "mlp", "--allow-inference")
    listed = gridclient("models")
    missing = gridclient("delete-model", "ghost")

    assert (served.returncode, served.stdout, served.stderr) == (0, "Model saved with id: mlp\n", "")
    assert (listed.returncode, listed.stdout) == (0, "mlp\n")
    assert (missing.returncode, missing.stderr) == (cli.NOT_FOUND, "error: Model not found! (HTTP 404)\n")


def test_the_console_script_is_installed_by_setup():
    script = Path(sys.executable).with_name("gridnode-client")
    if not script.exists():
        pytest.skip("gridnode-client is not installed: run ./scripts/setup")

    result = subprocess.run([script, "--help"], capture_output=True, text=True, check=False)

    assert result.returncode == 0
    assert result.stdout.startswith("usage: gridnode-client")

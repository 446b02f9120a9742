"""The client installs without Django (pyproject ships gridclient, gridarchive and smpc_protocol): its
archive checks must work in a process where Django cannot even be imported."""

import json
import subprocess
import sys
import tomllib
from pathlib import Path

from setuptools import find_packages

from tests.conftest import jit_bytes, small_mlp
from tests.gridclient.hostile import HostileNode, Route
from tests.gridclient.test_hostile_node import plan_with_pickled_weight

ROOT = Path(__file__).resolve().parents[2]

CLIENT = """
import json, sys
sys.modules["django"] = None  # any import of Django now fails
sys.modules["rest_framework"] = None
from gridclient import GridNodeClient, ModelRefused

client = GridNodeClient(sys.argv[1], progress=False)
model = client.download_model("good")
try:
    client.download_model("bad")
    refused = None
except ModelRefused as exc:
    refused = exc.message
print(json.dumps({"loaded": type(model).__name__, "refused": refused, "django": "django.conf" in sys.modules}))
"""


def test_the_client_package_ships_the_archive_rules():
    found = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = find_packages(where=ROOT, include=found["include"])

    assert {"gridclient", "gridarchive", "smpc_protocol"} <= set(packages)
    assert not {"models_app", "gridnode"} & set(packages)


def test_download_model_checks_archives_without_django(tmp_path):
    canary = tmp_path / "canary"
    node = HostileNode(
        {
            "/get_model/good": Route(jit_bytes(small_mlp()), "application/octet-stream"),
            "/get_model/bad": Route(plan_with_pickled_weight(canary), "application/octet-stream"),
        }
    )
    try:
        result = subprocess.run(
            [sys.executable, "-c", CLIENT, node.url], cwd=ROOT, capture_output=True, text=True, timeout=300
        )
    finally:
        node.close()

    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["loaded"] == "RecursiveScriptModule"
    assert "holds pickled objects" in outcome["refused"]
    assert outcome["django"] is False
    assert not canary.exists()

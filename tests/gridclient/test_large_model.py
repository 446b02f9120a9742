"""A 200 MB model up and back down: streamed, so the client's memory grows by far less than the archive."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gridclient import GridNodeClient
from models_app.models import HostedModel

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
SIDE = 4096  # one Linear(4096, 4096) without bias is 64 MiB of float32 weights
LAYERS = 3


def write_large_archive(path: Path) -> None:
    model = torch.nn.Sequential(*[torch.nn.Linear(SIDE, SIDE, bias=False) for _ in range(LAYERS)]).eval()
    torch.jit.save(torch.jit.script(model), str(path))


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak memory is read from /proc")
def test_a_200_mb_upload_and_download_grow_client_memory_by_less_than_twice_the_archive(node, tmp_path):
    archive, copy = tmp_path / "large.pt", tmp_path / "copy.pt"
    write_large_archive(archive)
    size = archive.stat().st_size
    assert size > 200_000_000

    # A fresh process, so the figure is the client's alone (the live node runs in this one).
    result = subprocess.run(
        [sys.executable, "-m", "tests.gridclient.peak_memory", node, str(archive), "large", str(copy)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert result.returncode == 0, result.stderr
    growth = json.loads(result.stdout)
    print(
        f"\narchive {size / 1e6:.1f} MB; client peak RSS growth: upload {growth['upload'] / 1e6:.1f} MB, "
        f"download {growth['download'] / 1e6:.1f} MB (peak reset: {growth['reset']})"
    )
    assert growth["upload"] < 2 * size
    assert growth["download"] < 2 * size
    # Streamed, the growth is a few 1 MiB chunks and buffers; reading the file whole would be 200 MB.
    assert max(growth["upload"], growth["download"]) < 32 * 1024**2
    assert HostedModel.objects.get(model_id="large").size == size
    assert copy.stat().st_size == size
    GridNodeClient(node).delete_model("large")
    archive.unlink()
    copy.unlink()

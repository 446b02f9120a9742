"""Progress bars: drawn when asked (or on a terminal), silent otherwise."""

import pytest
import torch

from gridclient import GridNodeClient
from gridclient.progress import wanted
from tests.conftest import small_mlp

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_draws_a_bar_for_uploads_and_downloads_when_asked(node, capsys, tmp_path):
    client = GridNodeClient(node, progress=True)

    client.serve_model(small_mlp(), "mlp", allow_download=True)
    upload_bar = capsys.readouterr().err
    client.download_archive("mlp", tmp_path / "copy.pt")
    download_bar = capsys.readouterr().err

    assert "upload mlp" in upload_bar
    assert "100%" in upload_bar
    assert "download mlp" in download_bar
    assert "100%" in download_bar


def test_it_is_silent_when_told_or_when_stderr_is_not_a_terminal(node, capsys):
    GridNodeClient(node, progress=False).serve_model(small_mlp(), "quiet")
    GridNodeClient(node, progress=True).upload_dataset(torch.rand(2), progress=False)
    GridNodeClient(node).serve_model(small_mlp(), "auto")  # capsys' stderr is not a terminal

    assert capsys.readouterr().err == ""


def test_it_follows_the_terminal_unless_told(monkeypatch):
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    assert wanted(None) is True
    assert wanted(False) is False
    monkeypatch.setattr("sys.stderr.isatty", lambda: False)
    assert wanted(None) is False
    assert wanted(True) is True

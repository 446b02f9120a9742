"""deploy/render_nginx_conf.py with one upstream (the single host, as before) and with several replicas."""

import subprocess
import sys

import pytest

from tests.production.stack import nginx_binary
from tests.servers import REPO


def render(tmp_path, *upstreams: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "deploy/render_nginx_conf.py", str(tmp_path), *upstreams]
    env = {"GRIDNODE_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin"}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)


def upstream_block(conf: str) -> list[str]:
    block = conf.split("upstream gridnode {", 1)[1].split("}", 1)[0]
    return [line.strip() for line in block.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_one_upstream_is_one_server_never_retried(tmp_path):
    conf = render(tmp_path, f"unix:{tmp_path}/gunicorn.sock").stdout
    assert upstream_block(conf)[:1] == [f"server unix:{tmp_path}/gunicorn.sock;"]
    assert "least_conn;" not in conf
    assert "proxy_next_upstream off;" in conf


def test_several_upstreams_are_balanced_and_a_refused_connection_tries_the_next(tmp_path):
    conf = render(tmp_path, "10.0.0.11:8000", "10.0.0.12:8000").stdout
    assert upstream_block(conf)[:3] == ["least_conn;", "server 10.0.0.11:8000;", "server 10.0.0.12:8000;"]
    assert "proxy_next_upstream error timeout;" in conf  # never non_idempotent: a POST that arrived is not resent
    nginx = nginx_binary()
    if nginx is None:
        pytest.skip("nginx is not installed: the rendered file is not checked by nginx -t")
    (tmp_path / "nginx.conf").write_text(conf)
    checked = subprocess.run(
        [nginx, "-t", "-q", "-e", "stderr", "-c", str(tmp_path / "nginx.conf")], capture_output=True
    )
    assert checked.returncode == 0, checked.stderr


@pytest.mark.parametrize("address", ["a; evil", "10.0.0.1", "unix:relative.sock", "{x}:80"])
def test_an_address_that_is_not_one_is_refused(tmp_path, address):
    refused = render(tmp_path, "10.0.0.11:8000", address)
    assert refused.returncode != 0
    assert "not an upstream address" in refused.stderr

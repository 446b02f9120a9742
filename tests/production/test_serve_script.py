"""./scripts/serve starts nginx and gunicorn, answers through nginx, and stops both on Ctrl-C or SIGTERM."""

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.production.stack import REPO, ProductionStack, free_port, nginx_binary


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_it_serves_and_stops_both_processes(stop_signal):
    if nginx_binary() is None:
        pytest.skip("nginx is not installed (scripts/test installs Debian's nginx when it runs as root)")
    root = Path(tempfile.mkdtemp(prefix="gridnode-serve-"))
    root.chmod(0o755)
    stack = ProductionStack(root, GRIDNODE_WORKERS="1", GRIDNODE_INFERENCE_PROCESSES="1", GRIDNODE_NGINX_WORKERS="1")
    env = {**stack.env(), "GRIDNODE_PUBLIC_BIND": f"127.0.0.1:{free_port()}"}
    url = f"http://{env['GRIDNODE_PUBLIC_BIND']}"
    with open(root / "serve.log", "wb") as output:
        serve = subprocess.Popen(
            ["./scripts/serve"], cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        stack.gunicorn = serve  # for wait_until_answering's messages only
        stack.wait_until_answering(url, within=120)
        run = root / "data" / "run"
        nginx_pid = int((run / "nginx.pid").read_text())

        serve.send_signal(stop_signal)
        code = serve.wait(timeout=60)

        log = (root / "serve.log").read_text()
        assert code == 0, log
        assert "scripts/serve: stopped" in log
        assert not Path(f"/proc/{nginx_pid}").exists()
        assert not (run / "gunicorn.sock").exists()  # gunicorn removes its socket on a clean exit
        left = subprocess.run(["pgrep", "-f", str(root)], capture_output=True, text=True).stdout
        assert left == "", left
    finally:
        # scripts/serve, gunicorn and nginx share the session started here: one group to end them all.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(serve.pid, signal.SIGKILL)
        serve.wait()
        shutil.rmtree(root, ignore_errors=True)

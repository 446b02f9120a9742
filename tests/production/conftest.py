"""One production stack (nginx + gunicorn, tests/production/stack.py) shared by the tests of a module."""

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.production.stack import ProductionStack, nginx_binary

# Short client timeouts, so an attack outlives them within a test; gunicorn as the issue found it
# attacked (three gthread workers, one thread each), so that each held connection holds a whole worker.
STACK_ENVIRONMENT = {
    "GRIDNODE_CLIENT_HEADER_TIMEOUT": "3",
    "GRIDNODE_CLIENT_BODY_TIMEOUT": "3",
    "GRIDNODE_WORKERS": "3",
    "GRIDNODE_THREADS": "1",
    "GRIDNODE_INFERENCE_PROCESSES": "1",
    "GRIDNODE_NGINX_WORKERS": "1",
}


@pytest.fixture(scope="module")
def stack():
    if nginx_binary() is None:
        pytest.skip("nginx is not installed (scripts/test installs Debian's nginx when it runs as root)")
    # Not under pytest's temp folder, whose parents nginx's workers (www-data) may not enter.
    root = Path(tempfile.mkdtemp(prefix="gridnode-stack-"))
    production = ProductionStack(root, **STACK_ENVIRONMENT)
    try:
        yield production.start()
    finally:
        production.stop()
        shutil.rmtree(root, ignore_errors=True)

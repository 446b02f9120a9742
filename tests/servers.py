"""Starting gunicorn the way operators do (the repository's gunicorn.conf.py), for tests and benches."""

import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# gunicorn logs each address it binds; a TCP bind on port 0 gets one the kernel picked.
LISTENING = re.compile(r"Listening at: .*http://127\.0\.0\.1:(\d+)")


def start_gunicorn(
    env: dict[str, str], log: Path, *arguments: str, within: float = 120
) -> tuple[subprocess.Popen, str]:
    """Start `gunicorn gridnode.wsgi` in a session of its own (so its whole process group can be signalled),
    its output in `log`, and wait until it logs the loopback TCP address it listens on: (process, URL)."""
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "gridnode.wsgi", "--no-control-socket", *arguments],
            cwd=REPO,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    until = time.monotonic() + within
    while time.monotonic() < until:
        assert process.poll() is None, log.read_text()
        if found := LISTENING.search(log.read_text()):
            return process, f"http://127.0.0.1:{found.group(1)}"
        time.sleep(0.1)
    raise AssertionError(f"gunicorn did not listen within {within} s:\n{log.read_text()}")

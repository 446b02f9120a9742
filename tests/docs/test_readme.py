"""The README's walk-through, run in order against a fresh node, so that it can never drift from the node.

Each block runs as a newcomer would run it: from a checkout (here a folder whose `.venv` and `manage.py`
are this checkout's), after the first block (which activates the venv and sets GRIDNODE_URL), against a
gunicorn node with its own SQLite database and data folder, which the blocks' `manage.py` shares.
"""

import http.cookiejar
import os
import re
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.security.hostile import GunicornNode
from tests.servers import REPO

FENCE = re.compile(r"^```(bash|python)\n(.*?)^```", re.MULTILINE | re.DOTALL)
ADMIN_BLOCK = "createsuperuser"


def walk_through_blocks() -> list[tuple[str, str]]:
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Walk-through\n", 1)[1].split("\n## ", 1)[0]
    return FENCE.findall(section)


def expected_answers(code: str) -> list[str]:
    """The answers a block shows as comments under its commands: `# {...}` lines, `...` meaning anything,
    a note in parentheses after it ignored."""
    return [line[2:].split("   (")[0].strip() for line in code.splitlines() if line.startswith("# {")]


def matches(expected: str, output: str) -> bool:
    pattern = ".*".join(re.escape(part) for part in expected.replace(" ", "").split("..."))
    return re.search(pattern, output.replace(" ", "")) is not None


def admin_login(url: str, username: str, password: str) -> str:
    """Log into /admin/ as a browser does; answer the path the login lands on."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(f"{url}/admin/login/", timeout=30).read()
    token = next(cookie.value for cookie in jar if cookie.name == "csrftoken")
    form = urllib.parse.urlencode(
        {"username": username, "password": password, "csrfmiddlewaretoken": token, "next": "/admin/"}
    ).encode()
    request = urllib.request.Request(f"{url}/admin/login/", form, headers={"Referer": f"{url}/admin/login/"})
    with opener.open(request, timeout=30) as answer:
        return urllib.parse.urlsplit(answer.geturl()).path


@pytest.fixture
def node(tmp_path):
    started = GunicornNode(tmp_path / "node").start()
    yield started
    started.stop()


@pytest.fixture
def checkout(tmp_path):
    """A folder laid out like the checkout: the walk-through writes its files here, not into the repository."""
    folder = tmp_path / "checkout"
    folder.mkdir()
    (folder / ".venv").symlink_to(Path(sys.prefix))
    (folder / "manage.py").symlink_to(REPO / "manage.py")
    return folder


def test_the_walk_through_runs_top_to_bottom_on_a_fresh_node(node, checkout):
    blocks = walk_through_blocks()
    assert [language for language, _ in blocks][:1] == ["bash"]
    setup = blocks[0][1].replace("http://127.0.0.1:8000", node.url)
    assert node.url in setup, "the first block sets GRIDNODE_URL to the README's address"
    env = {name: value for name, value in os.environ.items() if not name.startswith(("GRIDNODE_", "DATABASE_URL"))}
    env.update(node.environment, GRIDNODE_DATA_DIR=str(node.root / "data"), SECRET_KEY="bounded-inference")

    outputs = []
    for number, (language, code) in enumerate(blocks[1:], start=2):
        script = code if language == "bash" else f"python - <<'README_PYTHON'\n{code}README_PYTHON\n"
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", f"{setup}\n{script}"],
            cwd=checkout,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, f"README walk-through block {number} failed:\n{code}\n{result.stderr}"
        outputs.append(result.stdout)
        for answer in expected_answers(code):
            assert matches(answer, result.stdout), f"block {number}: expected {answer} in:\n{result.stdout}"
        if ADMIN_BLOCK in code:
            password = re.search(r"DJANGO_SUPERUSER_PASSWORD=(\S+)", code).group(1)
            username = re.search(r"--username (\S+)", code).group(1)
            assert admin_login(node.url, username, password) == "/admin/"

    printed = "".join(outputs)
    assert "404 Model not found!" in printed
    assert "found\n" in printed
    assert "exit 4\n" in printed
    # The last block cleans up: the node is empty again and the folder holds only what the checkout had.
    assert node.infer("demo", [[1.0, 2.0, 3.0, 4.0]])[0] == 404
    assert sorted(path.name for path in checkout.iterdir()) == [".venv", "manage.py"]

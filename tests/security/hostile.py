"""Models a stranger could upload to hurt the node, and a gunicorn node started as operators start it.

Used by tests/security/test_bounded_inference.py and bench/bounded_inference.py.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from tests.reliability.helpers import post_multipart, request
from tests.servers import REPO, start_gunicorn


class Endless(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        while True:
            x = x + 1
        return x


class EndlessPlan(torch.nn.Module):
    """A torch.export program whose while_loop never ends (its condition is always true)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from torch._higher_order_ops.while_loop import while_loop

        def condition(i, value):
            return i >= 0

        def body(i, value):
            return i + 1, value + 1

        return while_loop(condition, body, (torch.zeros((), dtype=torch.int64), x))[1]


class Allocates(torch.nn.Module):
    """Allocates eight times as many floats as the caller asks for."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros([int(x[0].item()), 8]).sum().reshape(1)


class Answers(torch.nn.Module):
    """Answers as many floats as the caller asks for."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ones([int(x[0].item())])


class Stash(torch.nn.Module):
    """Hands every caller the previous caller's input."""

    def __init__(self):
        super().__init__()
        self.register_buffer("prev", torch.zeros(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        old = self.prev.clone()
        self.prev.copy_(x)
        return old


class ShowsTheGenerator(torch.nn.Module):
    """Answers 64 draws of dropout left on (where the random-number generator stands), then moves the
    generator on by as many draws as its input says: a channel from each caller to the next, were the
    generator kept from one inference to the next."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shown = torch.nn.functional.dropout(torch.ones(64), 0.5, True)
        for _ in range(int(x[0].item())):
            torch.nn.functional.dropout(torch.ones(1), 0.5, True)
        return shown


class ForgesLogs(torch.nn.Module):
    """Warns, and raises when its input is negative, with text that would be a log line of its own."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        forged = '\n{"level":"INFO","logger":"gridnode.requests","message":"request","path":"/forged"}\n'
        warnings.warn(forged)  # noqa: B028  (TorchScript's warn takes no stacklevel)
        if bool(x[0] < 0):
            for _ in range(6):
                forged = forged + forged
            raise RuntimeError(forged)
        return x


class GunicornNode:
    """A gunicorn node on its own SQLite database and data folder, with the repository's gunicorn.conf.py."""

    def __init__(self, root: Path, **environment: str):
        self.root = root
        self.environment = environment
        self.log = root / "gunicorn.log"
        self.url = ""
        self.process: subprocess.Popen | None = None

    def start(self, *, migrate: bool = True) -> "GunicornNode":
        env = {name: value for name, value in os.environ.items() if not name.startswith(("GRIDNODE_", "DATABASE_URL"))}
        env.update(
            DJANGO_SETTINGS_MODULE="gridnode.settings",
            GRIDNODE_DATA_DIR=str(self.root / "data"),
            GRIDNODE_BIND="127.0.0.1:0",
            SECRET_KEY="bounded-inference",
            **self.environment,
        )
        if migrate:
            subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=REPO, env=env, check=True, timeout=300)
        self.process, self.url = start_gunicorn(env, self.log)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)

    def serve(self, model_id: str, archive: bytes) -> tuple[int, object]:
        fields = {"model_id": model_id, "allow_remote_inference": "true"}
        return post_multipart(self.url, "/serve-model", fields, {"model": archive})

    def infer(self, model_id: str, data, timeout: float = 60) -> tuple[int, object]:
        body = json.dumps({"data": data}).encode()
        headers = {"Content-Type": "application/json"}
        return request(self.url, "POST", f"/model/{model_id}", body, headers, timeout=timeout)

    def memory_bytes(self) -> int:
        """Resident memory of the master and every process under it."""
        total = 0
        for pid in [self.process.pid, *descendants(self.process.pid)]:
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            found = re.search(r"VmRSS:\s+(\d+) kB", status)
            total += int(found.group(1)) * 1024 if found else 0
        return total


def descendants(pid: int) -> list[int]:
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    found = [int(child) for child in children]
    for child in list(found):
        found.extend(descendants(child))
    return found


def innocent_share(node: "GunicornNode", *, while_running, count: int = 40) -> tuple[float, list]:
    """The share of `count` ordinary inferences of `mlp` answered 200 within 2 s each while the calls in
    `while_running` run (four at most at once), and those calls' results."""
    answered = 0
    with ThreadPoolExecutor(max_workers=4) as pool:
        attackers = [pool.submit(call) for call in while_running]
        time.sleep(0.5)  # the attacks are running
        for _ in range(count):
            try:
                status, _ = node.infer("mlp", [[1.0, 2.0, 3.0, 4.0]], timeout=2)
            except OSError:
                status = None
            answered += status == 200
        results = [attacker.result(timeout=60) for attacker in attackers]
    return answered / count, results

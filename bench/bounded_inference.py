"""What hostile models cost a node run the production way (gunicorn + gunicorn.conf.py, default bounds).

    .venv/bin/python bench/bounded_inference.py [--deadline 30]

Starts a node on its own SQLite database and data folder, uploads the models of tests/security/hostile.py
and prints, one figure a line:

- cold_start_s: from starting gunicorn (with a stored model) to its first answered inference;
- endless_hold_s: how long an endless model's request holds before its 504;
- innocent_share: the share of 40 ordinary inferences answered within 2 s while two endless ones run;
- alloc_status, alloc_peak_growth_mib, alloc_after_growth_mib: a request that makes the model allocate
  8 GiB, and how much the node's memory (master, workers, inference processes) grew at its peak and
  a second after;
- answer_status, answer_s: a request for a 64 Mi-element answer, and how long its refusal took.
"""

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# The node's test helpers read Django's settings when imported; this process stores nothing.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gridnode.settings")
os.environ["GRIDNODE_DATA_DIR"] = tempfile.mkdtemp(prefix="gridnode-bench-")

import django  # noqa: E402
import torch  # noqa: E402

django.setup()

from tests.conftest import jit_bytes  # noqa: E402
from tests.security.hostile import (  # noqa: E402
    Allocates,
    Answers,
    Endless,
    GunicornNode,
    innocent_share,
)

MIB = 1024**2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deadline", type=int, default=30, help="GRIDNODE_INFERENCE_TIMEOUT (default 30)")
    options = parser.parse_args()
    environment = {"GRIDNODE_INFERENCE_TIMEOUT": str(options.deadline), "GRIDNODE_LOG_LEVEL": "WARNING"}
    with tempfile.TemporaryDirectory() as root:
        node = GunicornNode(Path(root), **environment).start()
        try:
            node.serve("mlp", jit_bytes(torch.nn.Sequential(torch.nn.Linear(4, 2)).eval()))
            for model_id, module in [("endless", Endless()), ("allocates", Allocates()), ("answers", Answers())]:
                assert node.serve(model_id, jit_bytes(module))[0] == 200
            node.stop()
            started = time.monotonic()
            node = GunicornNode(Path(root), **environment).start()
            while node.infer("mlp", [[1.0, 2.0, 3.0, 4.0]])[0] != 200:
                time.sleep(0.02)
            print(f"cold_start_s={time.monotonic() - started:.2f}")

            started = time.monotonic()
            status, _ = node.infer("endless", [1.0], timeout=options.deadline + 120)
            print(f"endless_status={status} endless_hold_s={time.monotonic() - started:.2f}")

            share, results = innocent_share(
                node,
                while_running=[
                    lambda: node.infer("endless", [1.0], timeout=options.deadline + 120),
                    lambda: node.infer("endless", [2.0], timeout=options.deadline + 120),
                ],
            )
            print(f"innocent_share={share:.3f} (endless answers: {[status for status, _ in results]})")

            node.infer("allocates", [1000.0])
            before = node.memory_bytes()
            peak = before
            done = threading.Event()

            def sample():
                nonlocal peak
                while not done.is_set():
                    peak = max(peak, node.memory_bytes())
                    time.sleep(0.01)

            sampler = threading.Thread(target=sample)
            sampler.start()
            status, _ = node.infer("allocates", [float(256 * MIB)])  # 2 Gi float32 elements: 8 GiB
            done.set()
            sampler.join()
            time.sleep(1)
            after = node.memory_bytes()
            print(
                f"alloc_status={status} alloc_peak_growth_mib={(peak - before) / MIB:.0f} "
                f"alloc_after_growth_mib={(after - before) / MIB:.0f} (node total before: {before / MIB:.0f} MiB)"
            )

            started = time.monotonic()
            status, _ = node.infer("answers", [float(64 * MIB)])
            print(f"answer_status={status} answer_s={time.monotonic() - started:.2f}")
        finally:
            node.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m tests.gridclient.peak_memory URL ARCHIVE MODEL_ID COPY`: the client's peak memory growth.

Uploads ARCHIVE as MODEL_ID, then downloads it to COPY, in this fresh process, and prints JSON with the
peak resident memory growth of each transfer in bytes: VmHWM after it minus VmRSS before it, the peak
first reset to the current size through /proc/self/clear_refs (Linux). Where the reset is refused, the
growth is measured from the previous peak, which can only understate it: "reset" says which.
"""

import gc
import json
import sys
from pathlib import Path

from gridclient import GridNodeClient


def _kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_growth(action) -> tuple[int, bool]:
    """Bytes the resident set grew by at its peak while `action` ran, and whether the peak was reset."""
    gc.collect()
    reset = _reset_peak()
    before = _kib("VmRSS" if reset else "VmHWM")
    action()
    return (_kib("VmHWM") - before) * 1024, reset


def main(url: str, archive: str, model_id: str, copy: str) -> None:
    client = GridNodeClient(url, progress=False)
    upload, reset = peak_growth(lambda: client.serve_model(archive, model_id, allow_download=True))
    download, _ = peak_growth(lambda: client.download_archive(model_id, copy))
    print(json.dumps({"upload": upload, "download": download, "reset": reset, "rss": _kib("VmRSS") * 1024}))


if __name__ == "__main__":
    main(*sys.argv[1:])

"""`python -m tests.gridclient.answer_memory URL CALL TARGET [MAX_ANSWER_BYTES]`: the client's peak memory
growth while it reads a hostile node's answer, in a fresh process.

CALL is `models` (a JSON answer, bounded by max_answer_bytes: the client's default unless given),
`download_archive` or `download_model` (the model `endless`, written under the folder TARGET with
max_bytes=MAX_ANSWER_BYTES). Prints JSON: the growth in bytes (peak_memory.peak_growth), whether the
peak was reset, and the exception the call raised (its type and the CLI's exit code for it).
"""

import json
import sys
from pathlib import Path

import gridarchive.archives  # noqa: F401  (imported before measuring: torch's own ~200 MB are not the answer's)
from gridclient import GridNodeClient, GridNodeError, cli
from tests.gridclient.peak_memory import peak_growth


def main(url: str, call: str, target: str, limit: str = "") -> None:
    options = {"max_answer_bytes": int(limit)} if limit and call == "models" else {}
    client = GridNodeClient(url, progress=False, timeout=60, **options)
    max_bytes = int(limit) if limit else None
    raised: list[GridNodeError] = []

    def act():
        try:
            if call == "models":
                client.models()
            elif call == "download_archive":
                client.download_archive("endless", Path(target) / "copy.pt", max_bytes=max_bytes)
            else:
                client.download_model("endless", max_bytes=max_bytes)
        except GridNodeError as exc:
            raised.append(exc)

    growth, reset = peak_growth(act)
    error = raised[0] if raised else None
    print(
        json.dumps(
            {
                "growth": growth,
                "reset": reset,
                "error": type(error).__name__ if error else None,
                "exit": cli.exit_code(error) if error else None,
                "message": str(error) if error else None,
            }
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:])

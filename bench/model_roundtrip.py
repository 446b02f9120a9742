"""Upload time and inference latency (first call vs cached) for the reference MLP on a running node.

usage: python bench/model_roundtrip.py [NODE_URL=http://127.0.0.1:8000] [REPEATS=200]

Writes the reference model with ../shared/bench/make_mlp.py (784-128-128-10 MLP), uploads it as a
TorchScript and as a torch.export archive (multipart, and latin-1 text in JSON as PyGrid clients did),
checks each prediction against expected.json, and prints timings. Uses only the standard library and
torch, so it runs from the project's .venv. Models it uploads are deleted again.
"""

import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from functools import partial
from pathlib import Path

SHARED_BENCH = Path(__file__).resolve().parents[2] / "shared" / "bench"


def call(url: str, body: bytes | None = None, content_type: str = "application/json") -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    if body is not None:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def multipart(fields: dict[str, str], file_field: str, file_bytes: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="m"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
        + file_bytes
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, (time.perf_counter() - start) * 1000


def main(node: str, repeats: int) -> None:
    work = Path(tempfile.mkdtemp())
    subprocess.run([sys.executable, str(SHARED_BENCH / "make_mlp.py"), str(work)], check=True, capture_output=True)
    expected = json.loads((work / "expected.json").read_text())
    infer_body = (work / "grid_infer.json").read_bytes()
    for archive_name in ["mlp.pt", "mlp.pt2"]:
        archive = (work / archive_name).read_bytes()
        for form in ["multipart", "json-latin1"]:
            model_id = f"bench-{archive_name.replace('.', '-')}-{form}-{uuid.uuid4().hex[:6]}"
            fields = {"model_id": model_id, "allow_remote_inference": "true"}
            if form == "multipart":
                body, content_type = multipart(fields, "model", archive)
            else:
                body = json.dumps({**fields, "encoding": "ISO-8859-1", "model": archive.decode("latin-1")}).encode()
                content_type = "application/json"
            (status, answer), upload_ms = timed(partial(call, f"{node}/serve-model", body, content_type))
            assert status == 200, answer
            (status, answer), first_ms = timed(partial(call, f"{node}/model/{model_id}", infer_body))
            assert status == 200, answer
            prediction = json.loads(answer)["prediction"]
            error = max(abs(a - b) for a, b in zip(prediction[0], expected[0], strict=True))
            cached = [timed(partial(call, f"{node}/model/{model_id}", infer_body))[1] for _ in range(repeats)]
            cached.sort()
            print(
                f"{archive_name:8} {form:12} size={len(archive)}B upload_ms={upload_ms:.1f} "
                f"first_infer_ms={first_ms:.2f} cached_p50_ms={statistics.median(cached):.2f} "
                f"cached_p99_ms={cached[int(len(cached) * 0.99) - 1]:.2f} max_abs_err={error:.2e}"
            )
            call(f"{node}/delete-model", json.dumps({"model_id": model_id}).encode())


if __name__ == "__main__":
    main(
        sys.argv[1].rstrip("/") if len(sys.argv) > 1 else "http://127.0.0.1:8000",
        int(sys.argv[2]) if len(sys.argv) > 2 else 200,
    )

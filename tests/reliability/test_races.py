"""Races settled by the database, with real threads and real sockets against a live node on PostgreSQL.

The node is `gridnode.wsgi.application` (the inference fast path in front of Django) served by a
threaded server in this process: every request gets its own thread and database connection.
"""

import base64
import hashlib
import io
import random
import threading
import time
from dataclasses import dataclass

import pytest
import torch

from datasets_app import services as dataset_services
from datasets_app.models import Dataset
from models_app import services as model_services
from models_app.models import HostedModel
from tests.reliability.conftest import NEEDS_POSTGRESQL
from tests.reliability.helpers import (
    eventually_empty,
    files_in,
    post_json,
    post_multipart,
    request,
    saved,
    scaled_mlp,
)

pytestmark = [pytest.mark.django_db(transaction=True), NEEDS_POSTGRESQL]

UPLOADERS = 10


def run_together(*calls) -> list:
    """Run each call in its own thread, all released at once; answers their results (or exceptions)."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(index, call):
        try:
            barrier.wait()
            results[index] = call()
        except BaseException as exc:  # reported by the test, not lost in the thread
            results[index] = exc

    threads = [threading.Thread(target=run, args=item) for item in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


@pytest.fixture(params=["early check", "constraint only"])
def early_check(request, monkeypatch):
    """Both ways a loser can lose: the views' early 409, or (with that check switched off, in this
    process, so every upload is staged, loaded and saved) the unique constraint at insert time."""
    if request.param == "constraint only":
        monkeypatch.setattr(model_services, "model_id_available", lambda **kwargs: None)
        monkeypatch.setattr(dataset_services, "dataset_id_available", lambda **kwargs: None)
    return request.param


def test_concurrent_uploads_of_one_model_id_are_one_200_and_409s(live_node, settings, data_dir, early_check):
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 0  # multipart parts go through the staging folder too
    archives = [scaled_mlp(float(index + 1)) for index in range(UPLOADERS)]

    def upload(index):
        archive = archives[index]
        if index % 2:
            fields = {"model_id": "same", "allow_remote_inference": "true"}
            return post_multipart(live_node, "/serve-model", fields, {"model": archive})
        body = {"model_id": "same", "encoding": "ISO-8859-1", "model": archive.decode("latin-1")}
        return post_json(live_node, "/serve-model", {**body, "allow_remote_inference": True})

    results = run_together(*(lambda index=index: upload(index) for index in range(UPLOADERS)))

    statuses = [result[0] for result in results]
    assert sorted(statuses) == [200] + [409] * (UPLOADERS - 1), results
    for status, answer in results:
        if status == 409:
            assert answer == {"success": False, "error": "Model with id: same already exists."}
    winner = statuses.index(200)
    hosted = HostedModel.objects.get()
    assert hosted.sha256 == hashlib.sha256(archives[winner]).hexdigest()
    assert files_in(data_dir / "files") == [hosted.archive.name]
    assert eventually_empty(data_dir / "tmp") == []
    status, answer = post_json(live_node, "/model/same", {"data": [[1.0, 2.0]]})
    assert (status, answer["prediction"]) == (200, [[3.0 * (winner + 1)]])


def test_concurrent_uploads_of_one_dataset_id_are_one_201_and_409s(live_node, settings, data_dir, early_check):
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 0
    tensors = [torch.full((2, 3), float(index)) for index in range(UPLOADERS)]

    def upload(index):
        if index % 2:
            fields = {"id": "same", "allow_download": "true"}
            return post_multipart(live_node, "/datasets", fields, {"data": saved(tensors[index])})
        body = {"id": "same", "data": tensors[index].tolist(), "allow_download": True}
        return post_json(live_node, "/datasets", body)

    results = run_together(*(lambda index=index: upload(index) for index in range(UPLOADERS)))

    statuses = [result[0] for result in results]
    assert sorted(statuses) == [201] + [409] * (UPLOADERS - 1), results
    for status, answer in results:
        if status == 409:
            assert answer == {"error": "Dataset with id: same already exists."}
    dataset = Dataset.objects.get()
    assert files_in(data_dir / "files") == [dataset.data.name]
    assert eventually_empty(data_dir / "tmp") == []
    winner = statuses.index(201)
    assert request(live_node, "GET", "/datasets/same/data?format=json")[1]["data"] == tensors[winner].tolist()


@dataclass
class Answer:
    sent: float  # time.monotonic() when the request was sent
    route: str
    rows: list
    status: int
    body: object

    def prediction(self) -> list[float]:
        """One number per row, whichever route answered."""
        if self.route == "fast path":
            return [row[0] for row in self.body["prediction"]]
        if self.route == "django view":
            raw = self.body["prediction"].encode("latin-1")
            return torch.load(io.BytesIO(raw), weights_only=True).reshape(-1).tolist()
        return self.body["outputs"][0]["data"]


class Hammer:
    """Threads sending inference requests for one model, by every route, until told to stop."""

    ROUTES = ("fast path", "django view", "v2")

    def __init__(self, url: str, model_id: str, threads: int = 4):
        self.url, self.model_id = url, model_id
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(index,)) for index in range(threads)]

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _run(self, index: int) -> None:
        rng = random.Random(index)
        route = self.ROUTES[index % len(self.ROUTES)]
        while not self._stop.is_set():
            rows = [[rng.uniform(-1, 1), rng.uniform(-1, 1)] for _ in range(rng.randint(1, 4))]
            sent = time.monotonic()
            status, body = self._infer(route, rows)
            with self._lock:
                self.answers.append(Answer(sent, route, rows, status, body))

    def _infer(self, route: str, rows: list):
        path = f"/model/{self.model_id}"
        if route == "fast path":  # a JSON body: answered in front of Django when it succeeds
            return post_json(self.url, path, {"data": rows})
        if route == "django view":  # a multipart part: always the DRF view
            return post_multipart(self.url, path, {}, {"data": saved(torch.tensor(rows))})
        flat = [value for row in rows for value in row]
        body = {"inputs": [{"name": "input__0", "shape": [len(rows), 2], "datatype": "FP32", "data": flat}]}
        return post_json(self.url, f"/v2/models/{self.model_id}/infer", body)


def check_answer(answer: Answer, scales: set[float]) -> float | None:
    """The scale of the model that produced a 200 (None for a 404); fails on anything else."""
    if answer.status == 404:
        assert answer.body["error"] == "Model not found.", answer
        return None
    assert answer.status == 200, answer
    prediction = answer.prediction()
    for scale in scales:
        expected = [scale * sum(row) for row in answer.rows]
        if all(abs(got - want) < 1e-4 for got, want in zip(prediction, expected, strict=True)):
            return scale
    pytest.fail(f"a prediction from no model that was ever served: {answer}")


@pytest.mark.parametrize("cache", ["warm", "reloading"])
def test_a_model_deleted_during_inference_answers_right_or_404_never_half(live_node, serve, data_dir, settings, cache):
    serve("doomed", scaled_mlp(2.0), allow_remote_inference=True)
    if cache == "reloading":
        settings.GRIDNODE_MODEL_CACHE_SIZE = 0  # the inference process keeps nothing: every request loads

    with Hammer(live_node, "doomed") as hammer:
        time.sleep(0.4)
        assert post_json(live_node, "/delete-model", {"model_id": "doomed"})[0] == 200
        deleted = time.monotonic()
        time.sleep(0.3)

    scales = [check_answer(answer, {2.0}) for answer in hammer.answers]
    after = [answer for answer in hammer.answers if answer.sent > deleted]
    print(f"{cache}: {scales.count(2.0)} right predictions, {scales.count(None)} 404s, {len(after)} after the delete")
    assert scales.count(2.0) > 0
    assert after
    assert all(answer.status == 404 for answer in after)
    assert not HostedModel.objects.exists()
    assert eventually_empty(data_dir / "files") == []


def test_a_model_replaced_during_inference_answers_the_old_or_the_new_never_a_mix(live_node, serve, data_dir):
    serve("swapped", scaled_mlp(1.0), allow_remote_inference=True)

    with Hammer(live_node, "swapped") as hammer:
        time.sleep(0.4)
        assert post_json(live_node, "/delete-model", {"model_id": "swapped"})[0] == 200
        new = scaled_mlp(3.0)
        body = {"model_id": "swapped", "encoding": "base64", "model": base64.b64encode(new).decode()}
        assert post_json(live_node, "/serve-model", {**body, "allow_remote_inference": True})[0] == 200
        replaced = time.monotonic()
        time.sleep(0.3)

    scales = [check_answer(answer, {1.0, 3.0}) for answer in hammer.answers]
    after = [check_answer(answer, {1.0, 3.0}) for answer in hammer.answers if answer.sent > replaced]
    print(f"old {scales.count(1.0)}, new {scales.count(3.0)}, 404 {scales.count(None)}; after the swap {len(after)}")
    assert scales.count(1.0) > 0
    assert after
    assert set(after) == {3.0}
    hosted = HostedModel.objects.get()
    assert files_in(data_dir / "files") == [hosted.archive.name]  # the old archive went with its row

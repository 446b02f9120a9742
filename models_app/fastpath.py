"""A WSGI fast path in front of Django for the node's hottest request: `POST /model/<id>` with JSON.

Measured on the reference MLP: Django's request machinery (middleware, URL resolving, DRF's dispatch)
cost about 360 µs of CPU per inference request, the inference itself (lookup, parsing, the model,
rendering) about 100 µs. This middleware runs exactly the code the DRF view runs for that request
(`models_app.inference.answer`) and renders the same bytes, without the machinery around it.

It answers only what needs nothing more: a POST to an inference path, a JSON body within the body limit,
a host Django would accept, no token to check (inference auth off, no Authorization header), and an
inference that succeeds. Every other request, and every request that would fail, goes to Django
unchanged (with the body it read put back), so error answers, and every rule that is not about running a
model, come from the one place they are written: the DRF viewset.
"""

import io
import logging
import re
from time import perf_counter

import orjson
from django.conf import settings
from django.core import signals
from rest_framework.utils.encoders import JSONEncoder

from gridnode.http import SECURITY_HEADERS, host_allowed
from gridnode.observability import observe_request
from models_app import inference

logger = logging.getLogger(__name__)

# The inference routes of models_app/urls.py: /model/<id> and /models/<id>, with or without a slash.
INFERENCE_PATH = re.compile(r"/models?/([^/]+)/?")

# What the DRF view's answer carries after Django's middleware: keep the two answers alike.
_HEADERS = [
    ("Content-Type", "application/json"),
    ("Vary", "Accept"),
    ("Allow", "POST, OPTIONS"),
    *SECURITY_HEADERS,
]


class InferenceFastPath:
    """WSGI middleware: answers successful JSON inference requests itself, hands the rest to Django."""

    def __init__(self, django_app):
        self.django_app = django_app
        self._default = JSONEncoder().default

    def __call__(self, environ, start_response):
        match = INFERENCE_PATH.fullmatch(environ.get("PATH_INFO", ""))
        if match is None or not self._may_answer(environ):
            return self.django_app(environ, start_response)
        started = perf_counter()
        body = environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"]))
        model_id = match.group(1)
        payload = self._answer(environ, model_id, body)
        if payload is None:
            environ["wsgi.input"] = io.BytesIO(body)
            return self.django_app(environ, start_response)
        start_response("200 OK", [*_HEADERS, ("Content-Length", str(len(payload)))])
        _observe(environ["PATH_INFO"], model_id, perf_counter() - started)
        return [payload]

    @staticmethod
    def _may_answer(environ) -> bool:
        """Whether the request is one this path can answer as Django would (before reading the body)."""
        if environ.get("REQUEST_METHOD") != "POST":
            return False
        # Tokens are DRF's business: with inference auth on, or a token to check, Django answers.
        if settings.GRIDNODE_AUTH_INFERENCE or "HTTP_AUTHORIZATION" in environ:
            return False
        if not environ.get("CONTENT_TYPE", "").startswith("application/json"):
            return False
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return False
        if not 0 < length <= settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
            return False
        return host_allowed(environ)

    def _answer(self, environ, model_id: str, body: bytes) -> bytes | None:
        """The rendered success answer, or None when Django should answer (an error, or anything odd)."""
        # The same connection bookkeeping as Django's handler: close connections past their age or broken.
        signals.request_started.send(sender=self.__class__, environ=environ)
        try:
            data = orjson.loads(body)
            result = inference.answer(model_id=model_id, body=lambda: data)
            return orjson.dumps(result, default=self._default)
        except Exception:
            return None
        finally:
            signals.request_finished.send(sender=self.__class__)


def _observe(path: str, model_id: str, seconds: float) -> None:
    """Count, time and log the request as the middleware would have, under the route Django resolves."""
    endpoint = "model-inference-alias" if path.startswith("/models/") else "model-inference"
    try:
        observe_request(method="POST", path=path, endpoint=endpoint, status=200, seconds=seconds, model_id=model_id)
    except Exception:  # telemetry never fails a request that was answered
        logger.exception("recording request metrics failed")

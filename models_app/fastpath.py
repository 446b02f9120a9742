"""A WSGI fast path in front of Django for the node's hottest request: `POST /model/<id>` with JSON.

Measured on the reference MLP: Django's request machinery (middleware, URL resolving, DRF's dispatch)
cost about 360 µs of CPU per inference request, the inference itself (lookup, parsing, the model,
rendering) about 100 µs. This middleware runs exactly the code the DRF view runs for that request
(`models_app.inference.answer`) and renders the same bytes, without the machinery around it.

It answers only what needs nothing more: a POST to an inference path, a JSON body within the body limit,
a host Django would accept, no token to check (inference auth off, no Authorization header), and an
inference that succeeds. Every other request goes to Django unchanged (with the body it read put back),
and so does every request whose inference failed, with the outcome of its one run, so error answers, and
every rule that is not about running a model, come from the one place they are written: the DRF viewset.
"""

import io
import logging
import re
from time import perf_counter

import orjson
from django.conf import settings
from django.core import signals
from rest_framework.utils.encoders import JSONEncoder

from gridnode.http import SECURITY_HEADERS, check_object_id, host_allowed
from gridnode.observability import observe_request
from models_app import executor, inference, services

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

# Content-Types (lower-cased) for which DRF picks the JSON parser and the body means what this path reads.
# DRF itself matches the type without regard to case or parameters (and `application/*` or `*/*` match it
# too); only these spellings are answered here, the rest go to Django, which is never wrong: a charset other
# than UTF-8, `application/jsonx` (a 415), a header longer than DRF parses (a 415).
_JSON_CONTENT_TYPES = frozenset(
    {"application/json", "application/json; charset=utf-8", "application/json;charset=utf-8"}
)

# Accept tokens for which DRF's negotiation surely picks the JSON renderer. DRF orders tokens by how specific
# they are and ignores q (`application/json;q=0` is still answered JSON): rather than mirror its rules, a
# token with a parameter, or of another type, goes to Django.
_JSON_ACCEPTS = frozenset({"*/*", "application/json"})
# DRF truncates an Accept header past 8192 characters (to nothing without a comma: a 406); far below that.
_MAX_ACCEPT_LENGTH = 256


def _accepts_plain_json(accept: str | None) -> bool:
    """Whether DRF would surely answer a request with this Accept header (None: absent) through the JSON renderer.

    Only lists made of `*/*` and `application/json` are; an empty header (a 406 from DRF), an empty item,
    another type (`application/octet-stream`, `text/html`) or a parameter (`;q=0.5`) go to Django.
    """
    if accept is None:
        return True  # DRF reads a missing Accept as */*
    if len(accept) > _MAX_ACCEPT_LENGTH:
        return False
    return all(token.strip() in _JSON_ACCEPTS for token in accept.split(","))


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
        # DRF reads `?format=` to pick the renderer (a 404 for one it does not know) and Django decodes the
        # query its own way (the last of repeated keys, percent-escapes): rather than mirror that, a request
        # with any query string goes to Django; inference clients send none.
        if environ.get("QUERY_STRING"):
            return False
        if environ.get("CONTENT_TYPE", "").lower() not in _JSON_CONTENT_TYPES:
            return False
        if not _accepts_plain_json(environ.get("HTTP_ACCEPT")):
            return False
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return False
        if not 0 < length <= settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
            return False
        return host_allowed(environ)

    def _answer(self, environ, model_id: str, body: bytes) -> bytes | None:
        """The rendered success answer, or None when Django should answer (an error, or anything odd).

        The model runs at most once: when its run fails, the outcome goes to Django in the environ
        (inference.FAST_PATH_OUTCOME), which renders the error from it without running it again.
        """
        # The same connection bookkeeping as Django's handler: close connections past their age or broken.
        signals.request_started.send(sender=self.__class__, environ=environ)
        try:
            try:
                model = services.model_for_inference(model_id=check_object_id(model_id, "model_id"))
            except Exception:
                return None  # Django answers: nothing ran
            outcome = executor.run("predict", model, *inference.json_body(body))
            if outcome.error is not None:
                # Refused before the model ran (a body that is not JSON, data that does not fit): Django
                # answers in its own words, and asks again only where it would get that far.
                if outcome.ran or outcome.status != 400:
                    environ[inference.FAST_PATH_OUTCOME] = outcome
                return None
            return orjson.dumps(inference.answer(model_id=model_id, body=None, ran=outcome), default=self._default)
        except Exception:
            logger.exception("the inference fast path failed")
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

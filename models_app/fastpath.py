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

import logging
import re

import orjson
from django.conf import settings
from rest_framework.utils.encoders import JSONEncoder

from gridnode.auth import INFERENCE
from gridnode.fastpath import Answer, FastPath
from gridnode.http import check_object_id
from models_app import executor, inference, services

logger = logging.getLogger(__name__)

# What the DRF view's answer carries besides its type and the security headers: keep the two answers alike.
_HEADERS = [("Vary", "Accept"), ("Allow", "POST, OPTIONS")]

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


class InferenceFastPath(FastPath):
    """Answers successful JSON inference requests itself; errors, and anything odd, go to Django."""

    # The inference routes of models_app/urls.py: /model/<id> and /models/<id>, with or without a slash.
    paths = re.compile(r"/models?/([^/]+)/?")
    group = INFERENCE

    def __init__(self, app):
        super().__init__(app)
        self._default = JSONEncoder().default

    def takes(self, environ, length: int) -> bool:
        # DRF picks its parser from the Content-Type and its renderer from Accept: only the spellings that
        # surely mean JSON both ways are answered here.
        return (
            0 < length <= settings.DATA_UPLOAD_MAX_MEMORY_SIZE
            and environ.get("CONTENT_TYPE", "").lower() in _JSON_CONTENT_TYPES
            and _accepts_plain_json(environ.get("HTTP_ACCEPT"))
        )

    def answer(self, environ, match: re.Match, length: int) -> Answer | None:
        """The rendered success answer, or None when Django should answer (an error, or anything odd).

        The model runs at most once: when its run fails, the outcome goes to Django in the environ
        (inference.FAST_PATH_OUTCOME), which renders the error from it without running it again.
        """
        body = self.read_body(environ, length)
        model_id = match.group(1)
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
            # `body` is read only when nothing ran yet; here the model already ran (`ran`).
            answer = inference.answer(model_id=model_id, body=lambda: inference.json_body(body), ran=outcome)
            payload = orjson.dumps(answer, default=self._default)
        except Exception:
            logger.exception("the inference fast path failed")
            return None
        return 200, "application/json", _HEADERS, payload

    def endpoint(self, path: str) -> str:
        return "model-inference-alias" if path.startswith("/models/") else "model-inference"

    def log_fields(self, match: re.Match) -> dict:
        return {"model_id": match.group(1)}

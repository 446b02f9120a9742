"""A WSGI fast path for `POST /smpc/exchange`, the request two workers make once per protocol round.

An encrypted inference of the reference MLP takes 19 rounds, one after another, so every millisecond
a round costs is paid 19 times on the client's latency. This path runs exactly what the DRF view runs
(`nodeauth.verify`, `runtime.message_session_id`, `channels.deliver`) without Django's request
machinery, and answers errors in the same JSON shape through the same exceptions. Requests it should
not judge (a missing, bad or too large Content-Length, a host Django would refuse) go to Django unchanged.
"""

import http
import io
import logging
from time import perf_counter

from django.conf import settings

from gridnode.errors import GridError
from gridnode.http import SECURITY_HEADERS, host_allowed
from gridnode.observability import observe_request
from smpc_app import channels, nodeauth, runtime

logger = logging.getLogger(__name__)

EXCHANGE_PATHS = {channels.EXCHANGE_PATH, channels.EXCHANGE_PATH + "/"}


class SessionExchangeFastPath:
    """WSGI middleware: answers the workers' round exchanges itself, hands every other request on."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        # Peers send no query string; a request with one gets Django's answer (?format= rules and all).
        if (
            environ.get("PATH_INFO") not in EXCHANGE_PATHS
            or environ.get("REQUEST_METHOD") != "POST"
            or environ.get("QUERY_STRING")
        ):
            return self.app(environ, start_response)
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if not 0 < length <= settings.DATA_UPLOAD_MAX_MEMORY_SIZE or not host_allowed(environ):
            return self.app(environ, start_response)
        started = perf_counter()
        body = environ["wsgi.input"].read(length)
        if len(body) != length:  # cut short: Django's WholeBodies answers that
            environ["wsgi.input"] = io.BytesIO(body)
            return self.app(environ, start_response)
        try:
            nodeauth.verify(
                method="POST",
                path=environ.get("SCRIPT_NAME", "") + environ["PATH_INFO"],
                timestamp=environ.get("HTTP_" + nodeauth.TIMESTAMP_HEADER.upper().replace("-", "_"), ""),
                signature=environ.get("HTTP_" + nodeauth.SIGNATURE_HEADER.upper().replace("-", "_"), ""),
                body=body,
            )
            content = channels.deliver(session_id=runtime.message_session_id(body), message=body)
            status, content_type = 200, "application/octet-stream"
        except GridError as error:
            answer = error.response()
            status, content, content_type = answer.status_code, answer.content, answer["Content-Type"]
        start_response(
            f"{status} {http.HTTPStatus(status).phrase}",
            [("Content-Type", content_type), ("Content-Length", str(len(content))), *SECURITY_HEADERS],
        )
        try:
            observe_request(
                method="POST",
                path=environ["PATH_INFO"],
                endpoint="smpc-exchange",
                status=status,
                seconds=perf_counter() - started,
            )
        except Exception:  # telemetry never fails a request that was answered
            logger.exception("recording request metrics failed")
        return [content]

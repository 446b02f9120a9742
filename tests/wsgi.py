"""One request through a WSGI app, the way gunicorn hands it over: for the layers in front of Django
(the inference fast path, WholeBodies) that Django's test client starts behind."""

import io

from django.core.signals import request_finished, request_started
from django.db import close_old_connections

# Headers that differ between two answers for reasons that are not the path taken.
VOLATILE = {"date", "server"}


def call_wsgi(app, method, path, body=b"", content_type="application/json", host="127.0.0.1", headers=None):
    """(status, headers with lower-case names, body) of one request; `headers` are extra request headers."""
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "HTTP_HOST": host,
        "CONTENT_TYPE": content_type,
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": io.StringIO(),
        "wsgi.url_scheme": "http",
    }
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    answer = {}

    def start_response(status, headers, exc_info=None):
        answer["status"] = int(status.split()[0])
        answer["headers"] = {k.lower(): v for k, v in headers if k.lower() not in VOLATILE}

    # As Django's test client does: the test's transaction must outlive the request.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        chunks = app(environ, start_response)
        content = b"".join(chunks)
        getattr(chunks, "close", lambda: None)()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
    return answer["status"], answer["headers"], content

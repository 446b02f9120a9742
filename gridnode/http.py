"""Request helpers shared by the apps: body fields, booleans, ids, and binary payloads sent as text."""

import base64
import binascii
import codecs
import re

import orjson
from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.http.request import split_domain_port, validate_host
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser, MultiPartParser
from rest_framework.renderers import JSONRenderer
from rest_framework.utils.encoders import JSONEncoder

from gridnode.errors import BadRequest, PayloadTooLarge

LATIN1 = "ISO-8859-1"
BASE64 = "base64"
JSON = "json"
_ENCODINGS = {
    "iso-8859-1": LATIN1,
    "iso8859-1": LATIN1,
    "latin-1": LATIN1,
    "latin1": LATIN1,
    "base64": BASE64,
    "json": JSON,
}
_TRUE = {"true", "1"}
_FALSE = {"false", "0"}
OBJECT_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-:@]{0,127}")
OBJECT_ID_RULE = "1-128 characters from letters, digits and . _ - : @, starting with a letter or digit"


class FastJSONParser(JSONParser):
    """JSON bodies parsed with orjson: inference arrays of thousands of numbers are the hot path."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return orjson.loads(stream.read())
        except orjson.JSONDecodeError:
            raise ParseError("JSON parse error.") from None


class FastJSONRenderer(JSONRenderer):
    """JSON answers rendered with orjson (NaN and infinity become null, which JSON allows)."""

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if data is None:
            return b""
        return orjson.dumps(data, default=JSONEncoder().default)


class BoundedMultiPartParser(MultiPartParser):
    """Multipart bodies, refused up front when their declared length is over the upload limit."""

    def parse(self, stream, media_type=None, parser_context=None):
        meta = parser_context["request"].META
        try:
            length = int(meta.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > settings.GRIDNODE_MAX_UPLOAD_BYTES:
            raise PayloadTooLarge(
                f"The upload is larger than this node accepts ({settings.GRIDNODE_MAX_UPLOAD_BYTES} bytes)."
            )
        return super().parse(stream, media_type, parser_context)


def _json_escape(error: UnicodeError) -> tuple[str, int]:
    """A codec error handler: each character past ASCII as JSON's \\uXXXX (a surrogate pair past U+FFFF)."""
    if not isinstance(error, UnicodeEncodeError):  # only ever named when encoding (ascii_json)
        raise error
    escaped = []
    for char in error.object[error.start : error.end]:
        point = ord(char)
        if point > 0xFFFF:
            point -= 0x10000
            escaped.append(f"\\u{0xD800 + (point >> 10):04x}\\u{0xDC00 + (point & 0x3FF):04x}")
        else:
            escaped.append(f"\\u{point:04x}")
    return "".join(escaped), error.end


codecs.register_error("gridnode.json_escape", _json_escape)


def ascii_json(rendered: bytes) -> bytes:
    """UTF-8 JSON with every character past ASCII escaped (`\\u00e9`): the same JSON, read right whatever
    charset the client decodes it with (the 2019 PyGrid client read answers as ISO-8859-1).

    ASCII JSON (numbers, plain text) comes back as it is. Outside strings JSON has only ASCII, so only
    characters inside strings are escaped.
    """
    if rendered.isascii():
        return rendered
    return rendered.decode("utf-8").encode("ascii", "gridnode.json_escape")


def body_field(data, name: str):
    """One field of a parsed body (JSON object, form or multipart), or None when absent."""
    if not hasattr(data, "get"):
        raise BadRequest("The request body must be a JSON object or a form.")
    return data.get(name)


def parse_bool(value, field: str, *, default: bool = False) -> bool:
    """A flag as JSON true/false or the strings True/False/true/false/1/0; anything else is a 400."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    raise BadRequest(f"'{field}' must be true or false.")


def check_object_id(value, field: str) -> str:
    """A model or dataset id that follows the id rules, or a 400 that says what they are."""
    if value is None or value == "":
        raise BadRequest(f"'{field}' is required.")
    if not isinstance(value, str) or not OBJECT_ID_RE.fullmatch(value):
        raise BadRequest(f"'{field}' must be {OBJECT_ID_RULE}.")
    return value


def parse_encoding(value, *, allow_json: bool) -> str:
    """The canonical name of a payload encoding: ISO-8859-1, base64 or (where allowed) json."""
    if value is None or value == "":
        return JSON if allow_json else ""
    name = _ENCODINGS.get(value.strip().lower()) if isinstance(value, str) else None
    if name is None or (name == JSON and not allow_json):
        allowed = "ISO-8859-1, latin-1, base64" + (" or json" if allow_json else "")
        raise BadRequest(f"Unknown encoding: use {allowed}.")
    return name


def decode_text(text: str, encoding: str, field: str) -> bytes:
    """The bytes that a text field carries under a binary-to-text encoding."""
    if encoding == LATIN1:
        try:
            return text.encode("latin-1")
        except UnicodeEncodeError:
            raise BadRequest(f"'{field}' has characters outside ISO-8859-1.") from None
    if encoding == BASE64:
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest(f"'{field}' is not valid base64.") from None
    raise BadRequest(f"'{field}' needs an 'encoding' (ISO-8859-1 or base64).")


def encode_bytes(raw: bytes, encoding: str) -> str:
    """Bytes as text under ISO-8859-1 (byte N is code point N) or base64."""
    if encoding == BASE64:
        return base64.b64encode(raw).decode("ascii")
    return raw.decode("latin-1")


def is_upload(value) -> bool:
    """Whether a body field is a multipart file part (raw bytes, no encoding needed)."""
    return isinstance(value, UploadedFile)


def host_allowed(environ) -> bool:
    """Whether Django would accept a WSGI request's Host (for the fast paths, which answer before Django)."""
    allowed = settings.ALLOWED_HOSTS
    if "*" in allowed:
        return True
    if settings.USE_X_FORWARDED_HOST or not allowed:
        return False  # Django's own rules for these cases are not repeated here
    domain, _ = split_domain_port(environ.get("HTTP_HOST", ""))
    return bool(domain) and validate_host(domain, allowed)


# What Django's security middleware adds to every answer; the fast paths, which answer before Django,
# add the same so that their answers look alike.
SECURITY_HEADERS = [
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
]

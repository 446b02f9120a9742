"""Worker and crypto-provider addresses: absolute http(s) URLs, checked and put in one canonical form.

The canonical form, which is what the node stores and answers with:
- scheme and host in lower case; an international host name in its IDNA (`xn--`) form; an IPv4 or IPv6
  address in its standard spelling (`[::1]`);
- no default port (`:80` for http, `:443` for https), other ports without leading zeros;
- no trailing slash: `http://a.example/` is `http://a.example`, `http://h/grid/` is `http://h/grid`.

So two spellings of one address are one worker node. Refused outright: other schemes, a missing host,
user names and passwords (an address is read back by anyone who searches), query strings, fragments,
spaces, control characters and backslashes. The node only stores these strings; it never connects to them.
"""

import ipaddress
import re
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError

from gridnode.errors import BadRequest

MAX_URL_LENGTH = 2048
URL_RULE = "an absolute http or https URL with a host"
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Control characters, spaces and backslashes: urlsplit silently drops some of them and browsers read
# a backslash as a slash, so a URL holding any of them could mean two different addresses.
_UNSAFE_RE = re.compile(r"[\x00-\x20\x7f-\x9f\\]")
_NETLOC_RE = re.compile(r"(?P<host>\[[^\]]*\]|[^:\[\]]*)(?::(?P<port>[0-9]*))?")
# A host-name label; underscores are allowed because container names (grid_alice) use them.
_LABEL_RE = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")
_PATH_RE = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*")


def normalize_node_url(value, field: str) -> str:
    """The canonical form of a node's address, or a 400 that names `field` and says what is wrong."""
    if not isinstance(value, str):
        raise BadRequest(f"'{field}' must be a string.")
    text = value.strip()
    invalid = BadRequest(f"'{field}' must be {URL_RULE}.")
    if not text or _UNSAFE_RE.search(text):
        raise invalid
    if len(text) > MAX_URL_LENGTH:
        raise BadRequest(f"'{field}' is longer than {MAX_URL_LENGTH} characters.")
    if "#" in text:
        raise BadRequest(f"'{field}' must not have a fragment (#...).")
    if "?" in text:
        raise BadRequest(f"'{field}' must not have a query string (?...).")
    try:
        parts = urlsplit(text)
    except ValueError:  # an unbalanced or invalid [IPv6] host
        raise invalid from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not text[len(scheme) :].startswith("://"):
        raise invalid
    if "@" in parts.netloc:
        raise BadRequest(f"'{field}' must not carry a user name or password.")
    netloc = _NETLOC_RE.fullmatch(parts.netloc)
    if netloc is None:
        raise invalid
    host = _canonical_host(netloc["host"])
    if host is None:
        raise invalid
    port = ""
    if netloc["port"]:
        number = int(netloc["port"])
        if not 1 <= number <= 65535:
            raise BadRequest(f"'{field}' has a port that is not a number from 1 to 65535.")
        if number != _DEFAULT_PORTS[scheme]:
            port = f":{number}"
    if not _PATH_RE.fullmatch(parts.path):
        raise BadRequest(f"'{field}' has characters in its path that must be percent-encoded.")
    return f"{scheme}://{host}{port}{parts.path.rstrip('/')}"


def _canonical_host(host: str) -> str | None:
    """A host name or IP address in canonical form, or None when it is not one."""
    if host.startswith("["):
        try:
            return f"[{ipaddress.IPv6Address(host[1:-1]).compressed}]"
        except ValueError:
            return None
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    host = host.lower()
    labels = host.split(".")
    if labels[-1].isdigit():
        # A name whose last label is a number can only be an IPv4 address.
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            return None
    if len(host) > 253 or not all(_LABEL_RE.fullmatch(label) for label in labels):
        return None
    return host


def validate_canonical_node_url(value: str) -> None:
    """Model-field validator: the value is a node address already in canonical form."""
    try:
        canonical = normalize_node_url(value, "url")
    except BadRequest as exc:
        raise ValidationError(exc.message, code="invalid") from None
    if canonical != value:
        raise ValidationError(
            "Store the address in its canonical form: %(canonical)s.",
            code="not_canonical",
            params={"canonical": canonical},
        )

"""A multipart/form-data body that is read from its file as it is sent, with its length known up front.

The file part is never loaded into memory: the body is a generator of chunks (the small headers, then
the file one chunk at a time), and its Content-Length is the headers' length plus the file's size.
"""

import os
import uuid
from collections.abc import Iterator
from typing import BinaryIO

CHUNK = 1024 * 1024


class SourceReadError(OSError):
    """The file being uploaded could not be read to the end: a local failure, not the node's."""


def _quoted(value: str) -> str:
    # RFC 7578 section 2: a quote or a line break in a name or file name is percent-encoded.
    return value.replace("\r", "%0D").replace("\n", "%0A").replace('"', "%22")


class MultipartBody:
    """Text fields and one file part, streamed as multipart/form-data.

    `fields` are (name, value) pairs; a name may repeat (the node reads repeated `tags` as a list).
    `source` is a binary file object positioned at the start of the part's bytes; `size` of them are sent.
    """

    def __init__(self, fields: list[tuple[str, str]], *, file_field: str, filename: str, source: BinaryIO, size: int):
        self.boundary = f"gridclient-{uuid.uuid4().hex}"
        self._source = source
        self._size = size
        head = b"".join(self._field(name, value) for name, value in fields)
        head += (
            f"--{self.boundary}\r\n"
            f'Content-Disposition: form-data; name="{_quoted(file_field)}"; filename="{_quoted(filename)}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        self._head = head
        self._tail = f"\r\n--{self.boundary}--\r\n".encode()

    def _field(self, name: str, value: str) -> bytes:
        return (
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{_quoted(name)}"\r\n\r\n{value}\r\n'
        ).encode()

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    @property
    def length(self) -> int:
        return len(self._head) + self._size + len(self._tail)

    def chunks(self) -> Iterator[bytes]:
        """The body, a chunk at a time; fails if the file no longer holds `size` bytes."""
        yield self._head
        remaining = self._size
        while remaining:
            try:
                chunk = self._source.read(min(CHUNK, remaining))
            except OSError as exc:
                raise SourceReadError(f"{self._describe()} could not be read: {exc}") from exc
            if not chunk:
                # Content-Length is already sent: a short body would leave the node waiting.
                raise SourceReadError(f"{self._describe()} shrank while it was being sent.")
            remaining -= len(chunk)
            yield chunk
        yield self._tail

    def _describe(self) -> str:
        name = getattr(self._source, "name", None)
        return f"The file {os.fsdecode(name)}" if isinstance(name, str | bytes) else "The file being sent"

"""Zip files from the other end of the wire, sized up from their directory before anything unpacks them.

Model archives (`torch.jit.save`, `torch.export.save`) and tensors (`torch.save`) are zip files, and
torch writes their entries uncompressed: what they unpack to is about their own size. A zip bomb is a
small file whose directory promises entries far larger than itself (deflate reaches ~1000:1), or more
entries than any model has. torch's reader believes those promises (it allocates each entry's declared
size, then inflates into it), and so does Python's `zipfile` when it parses the directory: so both are
checked here first, from the end-of-directory record and the directory alone.
"""

import struct
import zipfile
from typing import IO

from gridarchive.errors import ArchiveRefused

# A large model has a few thousand entries (one per tensor, plus code); a bomb has millions.
MAX_ENTRIES = 10_000
# Bytes of central directory that are parsed at most: 400 per entry leaves room for long code paths.
MAX_DIRECTORY_BYTES = MAX_ENTRIES * 400
# Entries may unpack to at most this many times the file's size (torch's own files: under 1)...
MAX_EXPANSION = 10
# ...counted from at least this size, so a tiny file that a client deflated is not refused for it.
_EXPANSION_FLOOR = 1024 * 1024
_READABLE = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED}

_END_OF_DIRECTORY = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_END_OF_DIRECTORY = b"PK\x06\x06"
_END_RECORD_SIZE = 22
_MAX_COMMENT = 65535


def is_zip(source: IO[bytes]) -> bool:
    """Whether a file starts like a zip archive (what torch.load checks to pick its zip reader)."""
    try:
        return source.read(4) == b"PK\x03\x04"
    finally:
        source.seek(0)


def check_zip(source: IO[bytes], *, what: str, max_unpacked_bytes: int) -> None:
    """Refuse a zip that is not one plain, bounded archive: `ArchiveRefused` naming `what` and the rule broken.

    Reads the end-of-directory record and the directory only, never an entry. The rules: at most
    MAX_ENTRIES entries in at most MAX_DIRECTORY_BYTES of directory; no two entries with one name (two
    readers could pick different ones); no encryption and no compression but deflate; and all entries
    together unpack to at most `max_unpacked_bytes` and at most MAX_EXPANSION times the file's size.
    """
    try:
        size = source.seek(0, 2)
        extent = _directory_extent(source, size)
        if extent is None:
            raise ArchiveRefused(f"{what} is not a readable zip file.")
        count, directory_bytes = extent
        if count > MAX_ENTRIES or directory_bytes > MAX_DIRECTORY_BYTES:
            raise ArchiveRefused(f"{what} has more entries than this node reads (at most {MAX_ENTRIES}).")
        source.seek(0)
        try:
            with zipfile.ZipFile(source) as archive:
                entries = archive.infolist()
        except (zipfile.BadZipFile, ValueError, EOFError, OSError):
            raise ArchiveRefused(f"{what} is not a readable zip file.") from None
        if len(entries) > MAX_ENTRIES:
            raise ArchiveRefused(f"{what} has more entries than this node reads (at most {MAX_ENTRIES}).")
        if len({entry.filename for entry in entries}) != len(entries):
            raise ArchiveRefused(f"{what} holds two entries with the same name.")
        for entry in entries:
            if entry.flag_bits & 0x1:
                raise ArchiveRefused(f"{what} holds an encrypted entry.")
            if entry.compress_type not in _READABLE:
                raise ArchiveRefused(f"{what} holds an entry compressed in a way torch does not read.")
        unpacked = sum(entry.file_size for entry in entries)
        limit = min(max_unpacked_bytes, max(size, _EXPANSION_FLOOR) * MAX_EXPANSION)
        if unpacked > limit:
            raise ArchiveRefused(
                f"{what} unpacks to {unpacked} bytes, more than this node unpacks from a file of {size} bytes "
                f"({limit}); torch writes its files uncompressed."
            )
    finally:
        source.seek(0)


def _directory_extent(source: IO[bytes], size: int) -> tuple[int, int] | None:
    """(entry count, directory size in bytes) as the end-of-directory record states them, or None.

    The record is the last one in the file (after it comes only an optional comment), found the way
    zip readers find it: the last occurrence of its signature. Zip64 archives (over 4 GiB or 65,535
    entries) keep the true numbers in a second record that a locator before the first one points at.
    """
    tail_size = min(size, _END_RECORD_SIZE + _MAX_COMMENT)
    source.seek(size - tail_size)
    tail = source.read(tail_size)
    at = tail.rfind(_END_OF_DIRECTORY)
    if at < 0 or len(tail) - at < _END_RECORD_SIZE:
        return None
    _, _, _, _, count, directory_bytes, _, _ = struct.unpack("<4s4H2LH", tail[at : at + _END_RECORD_SIZE])
    if count != 0xFFFF and directory_bytes != 0xFFFFFFFF:
        return count, directory_bytes
    locator_at = size - tail_size + at - 20
    if locator_at < 0:
        return None
    source.seek(locator_at)
    locator = source.read(20)
    if len(locator) < 20 or locator[:4] != _ZIP64_LOCATOR:
        return None
    (record_at,) = struct.unpack("<Q", locator[8:16])
    if record_at > size - 56:
        return None
    source.seek(record_at)
    record = source.read(56)
    if len(record) < 56 or record[:4] != _ZIP64_END_OF_DIRECTORY:
        return None
    count, directory_bytes = struct.unpack("<QQ", record[32:48])
    return count, directory_bytes

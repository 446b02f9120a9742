"""Zip files from clients, sized up from their directory before anything unpacks them, with a refusal
answered as the node's 400.

The rules (entry counts, directory size, expansion, encryption, compression) live in the Django-free
gridarchive/ziplimits.py, which the client applies to what it downloads; see its docstring.
"""

from typing import IO

from gridarchive import ziplimits as rules
from gridarchive.errors import ArchiveRefused
from gridarchive.ziplimits import MAX_DIRECTORY_BYTES, MAX_ENTRIES, MAX_EXPANSION, is_zip
from gridnode.errors import BadRequest

__all__ = ["MAX_DIRECTORY_BYTES", "MAX_ENTRIES", "MAX_EXPANSION", "check_zip", "is_zip"]


def check_zip(source: IO[bytes], *, what: str, max_unpacked_bytes: int) -> None:
    """Refuse a zip that is not one plain, bounded archive: a 400 naming `what` and the rule broken
    (gridarchive.ziplimits.check_zip)."""
    try:
        rules.check_zip(source, what=what, max_unpacked_bytes=max_unpacked_bytes)
    except ArchiveRefused as refused:
        raise BadRequest(refused.message) from None

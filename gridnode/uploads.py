"""Upload handlers: multipart file parts read in large chunks and hashed while they are written.

A 1 GiB model arrives in 1 MiB chunks instead of Django's 64 KiB (a sixteenth of the parsing rounds),
and its sha256 is known when the part is complete, so storing it needs no second pass over the file.
"""

import hashlib

from django.core.files.uploadhandler import MemoryFileUploadHandler, TemporaryFileUploadHandler

CHUNK_SIZE = 1024 * 1024


class HashingMemoryFileUploadHandler(MemoryFileUploadHandler):
    """Small parts stay in memory, as Django's default; hashed later from memory."""

    chunk_size = CHUNK_SIZE


class HashingTemporaryFileUploadHandler(TemporaryFileUploadHandler):
    """Large parts go to a temporary file in FILE_UPLOAD_TEMP_DIR, hashed on the way."""

    chunk_size = CHUNK_SIZE

    def new_file(self, *args, **kwargs):
        super().new_file(*args, **kwargs)
        self._digest = hashlib.sha256()

    def receive_data_chunk(self, raw_data, start):
        self._digest.update(raw_data)
        return super().receive_data_chunk(raw_data, start)

    def file_complete(self, file_size):
        uploaded = super().file_complete(file_size)
        uploaded.sha256 = self._digest.hexdigest()
        return uploaded

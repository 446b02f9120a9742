"""The one exception of the archive checks: an archive (or a model loaded from one) is refused."""


class ArchiveRefused(Exception):
    """The archive, or the model in it, breaks one of the rules of `gridarchive`.

    `message` says which rule in words safe to show whoever sent the archive: it names entries,
    operators and limits, never the archive's data. The node answers it as a 400; the client raises
    it as `gridclient.UnsafeModel`.
    """

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

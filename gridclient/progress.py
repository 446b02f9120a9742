"""Progress bars for large transfers: tqdm on a terminal, nothing otherwise."""

import sys
from contextlib import contextmanager


class _Silent:
    """Stands in for a progress bar when none is shown."""

    def update(self, count: int) -> None:
        pass


def wanted(progress: bool | None) -> bool:
    """Whether to draw a bar: as asked, or, when not asked, only when stderr is a terminal."""
    if progress is None:
        return sys.stderr.isatty()
    return progress


@contextmanager
def progress_bar(total: int | None, description: str, progress: bool | None):
    """A byte-counting bar on stderr (`update(n)` per chunk), or a silent stand-in."""
    if not wanted(progress):
        yield _Silent()
        return
    # Imported here: a script that never shows a bar does not pay for tqdm's import.
    from tqdm import tqdm

    with tqdm(
        total=total,
        desc=description,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        file=sys.stderr,
        dynamic_ncols=True,
    ) as bar:
        yield bar

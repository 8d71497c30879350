"""Atomic file writing: a reader sees the old file or the new one, never half of either.

Every file vheight writes (annotations, films, reports, DICOM objects, batch
tables) goes through :func:`write_atomic`: the content is written to a
temporary file in the destination folder, flushed to disk, given the mode of
the file it replaces (or the default mode for a new file), then renamed over
the destination with :func:`os.replace`.  On any failure the temporary file is
removed and the destination is left as it was.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["write_atomic"]


def _default_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_atomic(
    path: str | os.PathLike[str],
    content: bytes | Callable[[BinaryIO], object],
    *,
    make_parents: bool = False,
) -> Path:
    """Write ``content`` to ``path`` atomically and return the path.

    Parameters
    ----------
    path
        The destination file.
    content
        The bytes to write, or a callable that writes them to the binary file
        object it is given (e.g. ``lambda fh: ds.save_as(fh)``).
    make_parents
        Create the destination folder (and its parents) when missing; otherwise
        a missing folder raises :class:`FileNotFoundError`.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if make_parents:
        folder.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        mode = _default_mode()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            if isinstance(content, (bytes, bytearray, memoryview)):
                handle.write(content)
            else:
                content(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path

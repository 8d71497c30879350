"""Files vheight reads and writes: only regular files in, atomic saves out.

Reading: :func:`regular_file_problem` and :func:`require_regular_file` say,
from :func:`os.stat` and before anything is opened, whether a path is a
regular file that can be read without blocking.  A named pipe (FIFO) would
block ``open()`` until a writer appears, a device or a ``/proc`` file may
never end or fail on read: none of them is a film or an annotation.

Writing: every file vheight writes (annotations, films, reports, DICOM
objects, batch tables) goes through :func:`write_atomic`: the content is
written to a temporary file in the destination folder (named
``.<name>.<random>.tmp``), flushed to disk, given the mode of the file it
replaces (or the default mode for a new file), then renamed over the
destination with :func:`os.replace`.  On any failure the temporary file is
removed and the destination is left as it was.  A process killed during a
save cannot remove its temporary file: the next save to the same destination
removes the temporary files of that destination older than
:data:`STALE_TEMP_SECONDS`.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "MAX_PATH_CHARS",
    "STALE_TEMP_SECONDS",
    "regular_file_problem",
    "require_regular_file",
    "write_atomic",
]

#: Longest path accepted (characters); longer ones are refused before the system is asked.
MAX_PATH_CHARS = 4096

#: Age (seconds) after which a temporary file of an interrupted save is removed.
STALE_TEMP_SECONDS = 3600.0

# Kernel file systems whose "files" are not data on a disk.
_SYSTEM_ROOTS = ("/proc/", "/sys/", "/dev/")


def regular_file_problem(path: str | os.PathLike[str], *, what: str = "file") -> str | None:
    """Why ``path`` cannot be read as a film or annotation, or None when it can.

    Checked with :func:`os.stat` (following symbolic links) without opening
    the file, so that a FIFO cannot block.  The reasons are short phrases,
    e.g. ``"no such file"``, ``"is a named pipe (FIFO), not a regular file"``,
    ``"the path contains a NUL byte"``; ``what`` names what was expected in
    the reason given for a folder (``"is a folder, not a film"``).
    """
    try:
        text = os.fspath(path)
    except TypeError:
        return f"a path must be text, found {type(path).__name__}"
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if "\x00" in text:
        return "the path contains a NUL byte"
    if len(text) > MAX_PATH_CHARS:
        return f"the path is {len(text)} characters long (at most {MAX_PATH_CHARS})"
    try:
        info = os.stat(text)
    except FileNotFoundError:
        return "no such file"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "the path is a loop of symbolic links"
        if exc.errno == errno.ENAMETOOLONG:
            return "the path or one of its names is too long"
        return f"cannot be read ({exc.strerror or exc})"
    except ValueError as exc:
        return f"not a usable path ({exc})"
    mode = info.st_mode
    if stat.S_ISDIR(mode):
        return f"is a folder, not a {what}"
    if stat.S_ISFIFO(mode):
        return "is a named pipe (FIFO), not a regular file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is a device, not a regular file"
    if stat.S_ISSOCK(mode):
        return "is a socket, not a regular file"
    if not stat.S_ISREG(mode):
        return "is not a regular file"
    real = os.path.realpath(text)
    if any(real.startswith(root) or real == root.rstrip("/") for root in _SYSTEM_ROOTS):
        return f"is a system file ({real}), not a regular file on disk"
    return None


def require_regular_file(
    path: str | os.PathLike[str],
    *,
    name: str | None = None,
    what: str = "file",
    error: type[Exception] = OSError,
) -> str:
    """``path`` as text when it is a regular file (:func:`regular_file_problem`).

    Raises ``error`` (e.g. :class:`~vheight.errors.ImageReadError`) with one
    line ``"<name>: <reason> (<path>)"`` otherwise.
    """
    problem = regular_file_problem(path, what=what)
    if problem is not None:
        raw = os.fspath(path) if isinstance(path, (str, os.PathLike)) else repr(path)
        shown_path = repr(raw) if "\x00" in str(raw) else str(raw)
        if len(shown_path) > 200:
            shown_path = shown_path[:100] + "..." + shown_path[-40:]
        shown = name or os.path.basename(shown_path) or shown_path
        if len(shown) > 200:
            shown = shown[:100] + "..."
        raise error(f"{shown}: {problem} ({shown_path})")
    return os.fsdecode(os.fspath(path))


def _default_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _temp_pattern(name: str) -> re.Pattern[str]:
    """The names :func:`tempfile.mkstemp` gives the temporary files of ``name``."""
    return re.compile(rf"\.{re.escape(name)}\.[A-Za-z0-9_]{{8}}\.tmp")


def _remove_stale_temps(folder: Path, name: str, *, now: float) -> None:
    """Remove the temporary files of earlier saves of ``name`` that were interrupted."""
    pattern = _temp_pattern(name)
    prefix = f".{name}."
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        if not entry.name.startswith(prefix) or not pattern.fullmatch(entry.name):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(info.st_mode) and now - info.st_mtime > STALE_TEMP_SECONDS:
                os.unlink(entry.path)
        except OSError:
            continue  # removed meanwhile, or not ours to remove


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
    _remove_stale_temps(folder, path.name, now=time.time())
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

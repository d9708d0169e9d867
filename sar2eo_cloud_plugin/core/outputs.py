"""Writing outputs so that nothing is lost and nothing corrupt is left (no QGIS, no torch).

Every file the plugin writes goes to a hidden temporary file beside its destination and is
renamed over the destination only once it is known to be complete: an existing good file is
replaced by a complete new one or not at all.

- :func:`temp_path` names the temporary file ``.<stem>.<pid>-<host>-<token>.partial<suffix>``.
  The process id and a short hash of the host name let a later run tell a partial file whose
  writer is gone (killed with SIGKILL, power cut) from one that is still being written, and the
  stem is shortened so that the name fits wherever the requested name fits (NAME_MAX).
- :func:`sweep_stale_partials` removes such leftovers: ours by name, older than the run, written
  on this host by a process that no longer exists.
- :func:`check_output_folder` says up front, naming the folder and the cause, why a folder
  cannot take an output (read-only file system, no permission, a parent path that is a file).
- :func:`os_error_text` turns an ``OSError`` into words (ENOSPC -> "no space left on device").
- :func:`atomic_write_text` writes a small text file (temp + fsync + rename).
- :func:`closing_errors` captures the errors GDAL reports while a dataset is closed (the moment
  a GeoTIFF's last blocks and directory are flushed, where a full disk shows up), which rasterio
  only logs; :func:`verify_raster` reopens a written raster and reads its last blocks.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import socket
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

from .errors import OutputError

PARTIAL_RE = re.compile(r"^\.(?P<stem>.*)\.(?P<pid>\d{1,10})-(?P<host>[0-9a-f]{4})-[0-9a-f]{6}"
                        r"\.partial(?P<suffix>\.[^.]*)?$")
# Name used by plugin versions before the PID was part of it: ``.<stem>.<8 hex>.partial<suffix>``.
LEGACY_PARTIAL_RE = re.compile(r"^\..*\.[0-9a-f]{8}\.partial\.[A-Za-z0-9]+$")
LEGACY_MAX_AGE_S = 24 * 3600      # a legacy partial this old has no live writer
SIDE_SUFFIXES = ("", ".aux.xml")

_ERRNO_TEXT = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a parent path is a file, not a folder",
    errno.ENAMETOOLONG: "file name too long",
    errno.EISDIR: "the path is a folder",
    errno.EIO: "input/output error",
}


def os_error_text(exc: BaseException) -> str:
    """Words for an OSError's cause ("no space left on device"), else the exception's text."""
    code = getattr(exc, "errno", None)
    if code in _ERRNO_TEXT:
        return _ERRNO_TEXT[code]
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:4]


def name_max(folder: Path) -> int:
    try:
        return int(os.pathconf(str(folder), "PC_NAME_MAX"))
    except (OSError, ValueError):
        return 255


def _truncate_utf8(text: str, max_bytes: int) -> str:
    return text.encode("utf-8")[:max(0, max_bytes)].decode("utf-8", "ignore")


def temp_path(final: str, default_suffix: str = ".tif") -> str:
    """Hidden temporary name beside ``final`` that fits NAME_MAX (the stem is shortened if needed)."""
    p = Path(final)
    suffix = p.suffix or default_suffix
    deco = f".{os.getpid()}-{host_tag()}-{uuid.uuid4().hex[:6]}.partial{suffix}"
    budget = name_max(p.parent if str(p.parent) else Path(".")) - len(b".") - len(deco.encode("utf-8"))
    stem = _truncate_utf8(p.stem, budget)
    return str(p.with_name(f".{stem}{deco}"))


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True     # exists, belongs to someone else
    except OSError:
        return True
    return True


def is_stale_partial(path: Path, started: float) -> bool:
    """True for a partial file of our naming, older than ``started``, whose writer is gone."""
    name = path.name
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return False
    if mtime >= started:
        return False
    m = PARTIAL_RE.match(name)
    if m:
        pid = int(m.group("pid"))
        if m.group("host") != host_tag() or pid == os.getpid():
            return False     # another machine's writer cannot be checked; our own may be another thread
        return not pid_alive(pid)
    if LEGACY_PARTIAL_RE.match(name):
        return time.time() - mtime > LEGACY_MAX_AGE_S
    return False


def sweep_stale_partials(folder, started: Optional[float] = None, log=None) -> List[str]:
    """Remove stale partial files of our naming in ``folder`` (not recursive); return their paths."""
    started = time.time() if started is None else started
    removed: List[str] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(".") or ".partial" not in entry.name or not entry.is_file(follow_symlinks=False):
            continue
        path = Path(entry.path)
        if not is_stale_partial(path, started):
            continue
        for side in SIDE_SUFFIXES:
            with contextlib.suppress(OSError):
                os.remove(str(path) + side)
                if not side:
                    removed.append(str(path))
    if removed and log:
        log(f"Removed {len(removed)} stale partial file(s) left in {folder} by an interrupted run: "
            + ", ".join(Path(p).name for p in removed))
    return removed


def check_output_folder(folder, what: str = "output") -> None:
    """Raise :class:`OutputError` naming ``folder`` and the cause when it cannot take a new file.

    Creates the folder (and its parents) when missing, then creates and removes a probe file in it.
    """
    folder = Path(folder) if str(folder) else Path(".")
    for parent in [folder] + list(folder.parents):
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"Cannot write the {what} into folder '{folder}': '{parent}' is a file, "
                                  "not a folder. Choose another output location.")
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"Cannot create the {what} folder '{folder}': {os_error_text(exc)}.") from exc
    try:
        fd, probe = tempfile.mkstemp(prefix=".sar2eo-probe-", dir=str(folder))
    except OSError as exc:
        raise OutputError(f"Cannot write the {what} into folder '{folder}': {os_error_text(exc)}. "
                          "Choose a folder you can write to.") from exc
    os.close(fd)
    with contextlib.suppress(OSError):
        os.remove(probe)


def no_space_left(folder, need: int = 64 * 1024) -> bool:
    """True when ``folder``'s file system cannot take ``need`` more bytes (checked by writing them)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".sar2eo-space-", dir=str(folder))
    except OSError as exc:
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    try:
        try:
            os.write(fd, b"\0" * need)
            os.fsync(fd)
        except OSError as exc:
            return exc.errno in (errno.ENOSPC, errno.EDQUOT)
        return False
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.remove(probe)


def write_failure_text(folder, detail: str) -> str:
    """The cause of a failed write: "no space left on device" when that is so, else GDAL's words."""
    if no_space_left(folder):
        return "no space left on device"
    return detail or "write error"


def fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_folder(folder) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(str(folder), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_quietly(paths: Sequence[str], log=None) -> None:
    """Remove our own temporary files (and their side files); a failure is logged, never raised,
    so that it cannot hide the error that made the run fail."""
    for path in paths:
        if not path:
            continue
        for side in SIDE_SUFFIXES:
            try:
                os.remove(path + side)
            except FileNotFoundError:
                pass
            except OSError as exc:
                if log and not side:
                    log(f"Could not remove the temporary file {path}: {os_error_text(exc)}")


def atomic_write_text(path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file, fsync, rename: the old file stays unless the
    new one is complete. Raises :class:`OutputError` naming the file and the cause."""
    path = Path(path)
    tmp = temp_path(str(path), default_suffix=".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        remove_quietly([tmp])
        raise OutputError(f"Cannot write '{path}': {os_error_text(exc)}. The previous file, if any, "
                          "is unchanged.") from exc
    fsync_folder(path.parent)


class _Capture(logging.Handler):
    """Collects the GDAL errors rasterio logs on this thread."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.thread = threading.get_ident()
        self.messages: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self.thread:
            return
        msg = record.getMessage()
        if record.levelno >= logging.ERROR or "GDAL signalled an error" in msg:
            self.messages.append(msg)


@contextlib.contextmanager
def closing_errors() -> Iterator[List[str]]:
    """Inside, GDAL errors (CE_Failure and worse) reported by rasterio on this thread are collected
    into the yielded list. rasterio logs (and does not raise) the errors of a dataset's close."""
    import rasterio

    capture = _Capture()
    logger = logging.getLogger("rasterio._env")
    old_level = logger.level
    logger.addHandler(capture)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        with rasterio.Env():
            yield capture.messages
    finally:
        logger.removeHandler(capture)
        logger.setLevel(old_level)


def verify_raster(path: str, width: int, height: int, count: int, dtype: str) -> Optional[str]:
    """None when ``path`` reopens with this size/bands/dtype and its last block row reads; else why not."""
    import rasterio
    from rasterio.windows import Window

    try:
        with rasterio.open(path) as src:
            if (src.width, src.height, src.count) != (width, height, count):
                return (f"it reopens as {src.width} x {src.height} px, {src.count} band(s) instead of "
                        f"{width} x {height} px, {count} band(s)")
            if any(d != dtype for d in src.dtypes):
                return f"its data type is {src.dtypes[0]} instead of {dtype}"
            bh = min(height, src.block_shapes[0][0] if src.block_shapes else 256)
            src.read(window=Window(0, height - bh, width, bh))
    except Exception as exc:  # noqa: BLE001 - rasterio raises several types; all mean "not complete"
        return f"it does not read back ({str(exc).strip() or type(exc).__name__})"
    return None


class OutputGuard:
    """An output path as it was before a run that may replace it (Processing's ``core_errors``, the
    folder batch): :meth:`restore` after a failure removes a file the run created and puts an earlier
    file back from a hard link taken here; :meth:`discard` after success drops the link."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.identity = _identity(path)
        self.backup: Optional[str] = None
        if self.identity is not None:
            # An earlier file at this path: keep a hard link to it, so that a run that replaces it and
            # then fails (e.g. a later step of the algorithm) puts the earlier file back.
            backup = temp_path(path)
            try:
                os.link(path, backup)
                self.backup = backup
            except OSError:
                self.backup = None

    def restore(self) -> None:
        now = _identity(self.path)
        if self.identity is None:
            if now is not None:
                remove_quietly([self.path])          # created by the failed run
        elif now != self.identity:
            if self.backup is not None:
                with contextlib.suppress(OSError):
                    os.replace(self.backup, self.path)   # the earlier file comes back
                    self.backup = None
            # without a backup, a replaced file is left as it is: never delete what we cannot restore
        self.discard()

    def discard(self) -> None:
        if self.backup is not None:
            remove_quietly([self.backup])
            self.backup = None


def _identity(path: str) -> Optional[Tuple[int, int, int, int]]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

"""What a run leaves behind when it fails, is cancelled or is terminated.

:func:`core_errors` turns the core's errors into QgsProcessingException and puts the outputs it
guards back as they were (:class:`~..core.outputs.OutputGuard`); :func:`sigterm_cancels` makes
SIGTERM cancel a run like the Cancel button does.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator, List, Optional, Sequence

from qgis.core import QgsProcessingException, QgsProcessingFeedback

from ..core import outputs as safe
from ..core.errors import CancelledError, Sar2EoError


@contextlib.contextmanager
def core_errors(cleanup: Sequence[str] = ()) -> Iterator[None]:
    """Turn the core's errors into QgsProcessingException with the same message.

    ``cleanup`` names files the block may write (e.g. outputs written by an earlier step of the
    algorithm). When anything goes wrong, a file the block created is removed and a file that was
    already there is left as it was before the block: if the block replaced it, the earlier file is
    put back from a hard link taken at entry; a file the block did not touch is never removed (a
    user's earlier good output must survive a failed or cancelled run). A failure of this cleanup
    never hides the error that caused it.
    """
    guards = [safe.OutputGuard(p) for p in cleanup if p]
    try:
        yield
    except BaseException as exc:
        for guard in guards:
            try:
                guard.restore()
            except Exception:  # noqa: BLE001 - keep the original error
                pass
        if isinstance(exc, QgsProcessingException):
            raise
        if isinstance(exc, CancelledError):
            raise QgsProcessingException(str(exc) or "Cancelled by the user; no output was written.") from exc
        if isinstance(exc, Sar2EoError):
            raise QgsProcessingException(str(exc)) from exc
        if isinstance(exc, MemoryError):
            raise QgsProcessingException("Out of memory: lower TILE_SIZE and BATCH_SIZE (advanced parameters) "
                                         "and try again.") from exc
        if isinstance(exc, OSError) and exc.filename:
            raise QgsProcessingException(f"Cannot use '{exc.filename}': {safe.os_error_text(exc)}.") from exc
        raise
    else:
        for guard in guards:
            guard.discard()


@contextlib.contextmanager
def sigterm_cancels(feedback: Optional[QgsProcessingFeedback], raise_after: bool = True) -> Iterator[List[int]]:
    """While the block runs, SIGTERM cancels ``feedback`` (as the Cancel button does) instead of
    killing the process, so the engine stops at its next tile and removes its temporary files; the
    run then fails with a message saying it was terminated.

    Installed only where that is safe: on the main thread (qgis_process runs algorithms there; the
    desktop runs them on worker threads, where Python cannot install handlers) and only when
    SIGTERM has its default action (a handler someone else installed is left alone). The previous
    handler is restored when the block ends. With ``raise_after`` (default), a SIGTERM that came
    after the block's last cancellation check still makes the run fail once the block is done; the
    folder batch passes False and reports it in its summary instead.
    """
    received: List[int] = []
    installed = False
    old = None
    if feedback is not None and threading.current_thread() is threading.main_thread():
        try:
            old = signal.getsignal(signal.SIGTERM)
            if old == signal.SIG_DFL:
                def handler(signum, _frame):
                    received.append(signum)
                    feedback.cancel()

                signal.signal(signal.SIGTERM, handler)
                installed = True
        except (ValueError, OSError, AttributeError):
            installed = False
    try:
        yield received
    except QgsProcessingException as exc:
        if received:
            raise QgsProcessingException("Terminated (SIGTERM): the run was stopped like a cancel; no partial "
                                         "output was left and an earlier file at the output path is unchanged. "
                                         f"({exc})") from exc
        raise
    finally:
        if installed:
            with contextlib.suppress(ValueError, OSError):
                signal.signal(signal.SIGTERM, old)
    if received and raise_after:
        raise QgsProcessingException("Terminated (SIGTERM) after the run had finished writing; its outputs "
                                     "are complete.")

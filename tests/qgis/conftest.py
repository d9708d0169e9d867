"""Helpers shared by the Processing tests: feedback that records the log (and can cancel at the
first tile), the files a run left in a folder, and running one of the plugin's algorithms. The
``provider`` fixture itself is in ``tests/conftest.py`` (the batch and fault tests use it too)."""
from __future__ import annotations

from pathlib import Path

import pytest
from qgis.core import QgsProcessingFeedback


class LogFeedback(QgsProcessingFeedback):
    """Keeps the info lines; with ``cancel_on_progress`` cancels as soon as the first tile reports progress."""

    def __init__(self, cancel_on_progress: bool = False):
        super().__init__()
        self.lines = []
        if cancel_on_progress:
            self.progressChanged.connect(lambda _p: self.cancel() if self.progress() > 0 else None)

    def pushInfo(self, info):  # noqa: N802
        self.lines.append(info)
        super().pushInfo(info)


def _leftovers(folder: Path):
    """Files in ``folder``, without the .aux.xml statistics side files GDAL/QGIS add when reading."""
    return sorted(p.name for p in Path(folder).iterdir() if not p.name.endswith(".aux.xml"))


@pytest.fixture
def log_feedback():
    """The LogFeedback class: ``log_feedback()``, ``log_feedback(cancel_on_progress=True)``."""
    return LogFeedback


@pytest.fixture
def leftovers():
    return _leftovers


@pytest.fixture
def run_alg(provider):
    """``run_alg(algorithm id, params, feedback=None, context=None)`` through ``processing.run``."""
    import processing

    def _run(alg_id, params, feedback=None, context=None):
        return processing.run(alg_id, params, feedback=feedback or LogFeedback(), context=context)

    return _run

"""The core's callbacks (progress, cancel, log) carried into a QgsProcessingFeedback."""
from __future__ import annotations

from typing import List, Optional

from qgis.core import QgsProcessingFeedback

from ..core.errors import CancelledError


class FeedbackAdapter:
    """Carries the core's callbacks (progress 0..100, is_cancelled, log) into a QgsProcessingFeedback.

    ``start``/``end`` map the core's 0..100 into a slice of the algorithm's progress bar
    when the algorithm has further steps after inference (e.g. polygonising).
    """

    def __init__(self, feedback: Optional[QgsProcessingFeedback], start: float = 0.0, end: float = 100.0) -> None:
        self.feedback = feedback or QgsProcessingFeedback()
        self.start, self.end = float(start), float(end)
        self.lines: List[str] = []

    def progress(self, percent: float) -> None:
        self.feedback.setProgress(self.start + (self.end - self.start) * max(0.0, min(100.0, percent)) / 100.0)

    def is_cancelled(self) -> bool:
        return bool(self.feedback.isCanceled())

    def log(self, message: str) -> None:
        self.lines.append(message)
        self.feedback.pushInfo(message)


def check_cancelled(feedback: Optional[QgsProcessingFeedback]) -> None:
    if feedback is not None and feedback.isCanceled():
        raise CancelledError("Cancelled by the user; no output was written.")

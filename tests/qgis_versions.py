"""What differs between the QGIS releases the suite runs on (3.22 on Debian 12, 3.40 on Debian 13), in one place."""
from __future__ import annotations

import inspect


def handle_algorithm_results(alg, context, feedback, parameters) -> bool:
    """Processing's own "load the results" step (what the Toolbox does when an algorithm finishes).

    QGIS 3.22's ``handleAlgorithmResults`` has a ``showResults`` argument (show HTML outputs in the results
    viewer; off here); 3.40 dropped it."""
    from processing.gui.Postprocessing import handleAlgorithmResults

    extra = {"showResults": False} if "showResults" in inspect.signature(handleAlgorithmResults).parameters else {}
    return handleAlgorithmResults(alg, context, feedback, parameters=parameters, **extra)

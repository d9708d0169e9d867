#!/usr/bin/env python3
"""Run pytest and leave with ITS exit code, skipping Python's interpreter shutdown.

    .venv/bin/python scripts/run_pytest.py [pytest arguments]   (scripts/test.sh uses it)

Why: after a session that drove QGIS widgets (pytest-qgis calls QgsApplication.exitQgis() at the end), the
PyQt/QGIS objects still referenced from Python are destroyed during interpreter finalization, and that can abort
with "double free or corruption" (exit 134) AFTER pytest has reported and written junit.xml. That abort says nothing
about the tests, so this wrapper exits with pytest's own code via os._exit once pytest.main() has returned.
Everything pytest does (fixtures' teardown, exitQgis, the junit report) still runs inside pytest.main().
"""
import os
import sys

if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())  # as `python -m pytest` does
    import pytest

    rc = int(pytest.main(sys.argv[1:]))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)

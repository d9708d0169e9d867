"""Fixtures for the QGIS-free core tests (nothing here imports qgis); helpers live in core_helpers.py."""
from __future__ import annotations

import pytest

from core_helpers import write_raster


@pytest.fixture
def raster_writer():
    return write_raster

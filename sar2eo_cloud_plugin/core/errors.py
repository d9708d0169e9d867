"""Exceptions raised by the QGIS-free core.

The QGIS side turns every one of these into a ``QgsProcessingException`` with the
same message, so the messages are written for a GIS user: they name the layer,
band or file at fault and say what to do about it.
"""


class Sar2EoError(Exception):
    """Base class for every error the core raises on purpose."""


class ModelFileError(Sar2EoError):
    """A model file is missing, truncated, tampered with or for another task."""


class NoBundledWeightsError(ModelFileError):
    """The plugin ships no trained weights for the requested model."""


class InputError(Sar2EoError):
    """The input raster cannot be used as asked (band count, units, CRS, nodata)."""


class DeviceError(Sar2EoError):
    """The requested compute device is not available."""


class CancelledError(Sar2EoError):
    """The user cancelled the run; no output was left behind."""


class OutputError(Sar2EoError):
    """An output cannot be written (read-only folder, disk full, ...); an earlier file there is kept."""


class DownloadError(Sar2EoError):
    """A model file could not be fetched or did not match its index entry; the message says why in words
    (no network, proxy, not found, TLS, disk full, permission, wrong checksum) and nothing bad was kept."""

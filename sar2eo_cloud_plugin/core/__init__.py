"""QGIS-free core of the plugin: networks, model files, normalisation, tiled inference.

Nothing in this package imports ``qgis``; torch and segmentation-models-pytorch are
imported only by the modules that need them (``networks``, and lazily in
``modelfile.load_model`` / ``inference``), so ``bands``, ``normalisation``,
``engine`` and ``errors`` import with numpy and rasterio alone.
"""

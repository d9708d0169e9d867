"""Processing side of the plugin: provider, algorithms and shipped graphical models (QGIS only)."""

"""Training package: produces every weight file the plugin ships (SAR -> EO CycleGAN, cloud-mask U-Net).

Networks and normalisation are imported from the plugin's QGIS-free core (``sar2eo_cloud_plugin.core``); the
plugin never imports this package. Entry point: ``python -m training --help``.
"""

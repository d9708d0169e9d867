"""Desktop GUI of the plugin: dock panel, layer actions, settings and the background runner.

The GUI never computes: it builds parameters for the plugin's Processing algorithms
(``sar2eo_cloud:translate_sar_to_eo`` / ``sar2eo_cloud:cloud_mask``) and runs them with
``QgsProcessingAlgRunnerTask`` on QGIS's task manager.
"""

"""SAR2EO & Cloud — QGIS plugin entry point.

QGIS calls :func:`classFactory`. Importing this package does not import ``qgis``
(so ``sar2eo_cloud_plugin.core`` stays usable from plain Python and the training
package); the QGIS side is imported only when QGIS asks for the plugin.
"""


def classFactory(iface):  # noqa: N802 (QGIS's name)
    from .plugin import Sar2EoCloudPlugin

    return Sar2EoCloudPlugin(iface)

"""Ortholens QGIS plugin package.

QGIS calls :func:`classFactory`; everything that needs ``qgis`` is imported inside it, so
``plugin.protocol`` and ``plugin.client`` (pure Python + pyzmq) can also be imported by the
daemon, the tests and ``build.py`` without QGIS.
"""


def classFactory(iface):  # noqa: N802 (QGIS API name)
    """Entry point QGIS calls with its ``QgisInterface``."""
    from .main import OrtholensPlugin
    return OrtholensPlugin(iface)

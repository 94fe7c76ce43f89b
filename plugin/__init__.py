"""Ortholens QGIS plugin package (``ortholens`` in a QGIS install).

The plugin imports itself with relative imports and the shared ``protocol`` package
absolutely. A release zip bundles ``protocol`` in ``ortholens/ext/``, which goes on
``sys.path`` here, before any plugin module imports it; a development checkout has no
``ext`` folder and finds ``protocol`` at the repository root.

QGIS calls :func:`classFactory`; the modules that need a QGIS GUI are imported inside
it, so loading the package stays cheap (``qgis_process`` loads it too).
"""

import sys
from pathlib import Path

_EXT = Path(__file__).resolve().parent / "ext"
if _EXT.is_dir() and str(_EXT) not in sys.path:
    # first on the path: the bundled protocol must win over any other 'protocol'
    sys.path.insert(0, str(_EXT))


def classFactory(iface):  # noqa: N802 (QGIS API name)
    """Entry point QGIS calls with its ``QgisInterface``; returns the plugin object."""
    from .main import OrtholensPlugin
    return OrtholensPlugin(iface)

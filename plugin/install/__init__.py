"""*Set up the engine…*: the plugin installs, checks, repairs and removes its detection
engine, and makes sure QGIS's Python can talk to it.

The plugin zip carries the engine as a wheel (``ortholens/engine/ortholens_engine-*.whl``,
built from the engine's ``pyproject.toml`` when the plugin is packaged). The setup creates a virtual
environment of its own under the user's data folder, outside QGIS's Python, installs the
wheel and its pinned dependencies with pip, and ends with a self-test.

Modules: ``locate`` (where things are: the engine folder, the wheel, a usable Python, the
GPU; no QGIS), ``plan`` (what will be installed and why, the pip commands, pip's errors
as sentences; no QGIS), ``selftest`` (ping, models and a detection on a generated chip),
``task`` (the install as a ``QgsTask``), ``dialog`` (the setup dialog), ``pyzmq``
(pyzmq in QGIS's Python: the check, the command that fixes it, the install with consent).
"""

"""The Ortholens dock: a column of sections, each a widget with its controls and its
signals, assembled by :class:`.panel.OrtholensDock`.

Sections, top to bottom:

* :mod:`.status`    the engine's status line; Refresh, Settings…, Set up the engine…;
* :mod:`.models`    the model list and *Add model…* (``..importing``), threshold and
  minimum area (the card's values unless the user sets one), the bands a detection
  sends;
* :mod:`.detection` Detect in extent; the running job's progress, Cancel and message;
  the last result's file;
* :mod:`.versions`  Retrain on corrections…, Make active, Roll back.

A new section is a ``QWidget`` put in the column with
:meth:`.panel.OrtholensDock.add_section`. The dock holds no logic: the plugin
(:mod:`..main`, :mod:`..retrain.controller`) reacts to the sections' signals.
"""

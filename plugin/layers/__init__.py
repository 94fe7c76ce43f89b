"""Detection results as a styled, editable GeoPackage layer.

Two halves, so the slow part can run in a :class:`~qgis.core.QgsTask`:

* :func:`.gpkg.write_result_gpkg` writes the GeoPackage; it touches no project or GUI
  object and may run on a worker thread;
* :func:`.load.load_result_layer` opens it with the ``ogr`` provider (edits are saved
  back to the file), styles it, sets up its fields for editing and adds it on top of
  the project's layer tree; UI thread only.

:func:`.load.write_result_layer` does both. Modules:

* :mod:`.schema`  the attribute table (:data:`.schema.RESULT_FIELDS`): ``class``,
  ``class_id``, ``score``, ``agreement``, ``area_m2``, ``model``, ``model_version`` and
  ``detected_at``, the last a GeoPackage DateTime (UTC) here where a batch job's
  GeoPackage stores ISO 8601 text;
* :mod:`.gpkg`    writing the GeoPackage atomically;
* :mod:`.editing` what editing a result layer shows and fills in: each field's alias
  with its unit (:data:`.editing.FIELD_ALIASES`) and, for a polygon drawn by hand,
  ``area_m2`` (measured whenever its geometry or attributes change, see
  :func:`.editing.area_expression`), ``class`` (the model's first class unless chosen)
  and ``class_id`` (from ``class``); ``score``, ``agreement``, ``model``,
  ``model_version`` and ``detected_at`` stay NULL, which is what tells a drawn polygon
  from a detected one;
* :mod:`.style`   the class colours and each run's outline colour;
* :mod:`.naming`  the result file's path, the layer's name and its run number;
* :mod:`.load`    opening, styling and placing the layer.
"""

"""Retrain on the user's corrections, and switch model versions, from QGIS.

The flow:

1. every detection remembers, on its result layer (custom layer properties, saved with
   the project), the raster it searched, the extent it covered and the model it used
   (:func:`.memory.remember_detection`);
2. the user edits that layer: deletes false detections, draws missed panels, reshapes
   or re-classes polygons;
3. **Retrain on corrections…** (dock button, Raster menu, or the layer's context menu)
   checks the layer (:func:`.plan.prepare_retrain`, UI thread) and opens the
   :class:`.dialogs.RetrainDialog`: the time budget, what will be used (corrected
   features per class, reviewed area), invalid-geometry handling, and whether to use
   the new version next;
4. a :class:`.task.RetrainTask` (``QgsTask``, progress bar and Cancel in the dock)
   sends the features and the reviewed extent to the daemon's ``retrain`` job; the
   before/after metrics are shown when it ends (:class:`.dialogs.RetrainResultDialog`)
   and an accepted version is selected in the dock;
5. the dock's **Make active** / **Roll back** buttons switch versions through the
   daemon (:class:`.task.VersionsTask`).

:class:`.controller.RetrainController` wires these to the plugin's GUI. Inside the
reviewed area the corrected layer is the truth: what no polygon covers is background
(so deleting every polygon teaches "nothing here").
"""

"""Detect in extent: from the active raster and the map view to a result layer.

Modules, in the order a detection uses them:

* :mod:`.crs`     CRS and extent maths (ground scale, metre CRSs, UTM zones, WKT);
* :mod:`.plan`    input checks and the :class:`~.plan.DetectPlan` (UI thread): a file
  the daemon reads by path, or a :class:`~.plan.RenderPlan` for pixels QGIS renders;
* :mod:`.render`  rendering a :class:`~.plan.RenderPlan` to RGB pixels (any thread);
* :mod:`.task`    :class:`~.task.DetectTask`, the ``QgsTask`` that runs it all off the
  UI thread and loads the result layer.
"""

"""The Ortholens Processing provider (``ortholens:*`` algorithms, Processing toolbox,
batch mode, models and ``qgis_process``).

One module per algorithm:

* ``detect_alg``   ``ortholens:detect``, *Detect objects*: a streaming, resumable batch
  job of the daemon over a raster of any size;
* ``evaluate_alg`` ``ortholens:evaluate``, *Evaluate against reference polygons or
  masks* (grids and counts in ``scoring``);
* ``chips_alg``    ``ortholens:exportchips``, *Export training chips*;
* ``jobs_alg``     ``ortholens:batchjobs``, *List / resume batch jobs* (and cancel; the
  job pick list is ``job_widget``);
* ``retrain_alg``  ``ortholens:retrain``, *Retrain from corrected features*;
* ``import_alg``   ``ortholens:importmodel``, *Add a model (ONNX)*: an ONNX file in
  Deepness's format becomes one of the engine's models (a MODEL parameter may also be
  such a file's path: it is added first);
* ``inventory_alg`` ``ortholens:solarinventory``, *Solar inventory*: the engine's
  inventory of a result layer (GeoPackage, CSV, HTML report);

plus ``provider`` (:class:`~.provider.OrtholensProvider`; more algorithms can be added
with :func:`~.provider.register_algorithm`), ``common`` (daemon connection, model list,
the MODEL parameter, feedback), ``outputs`` (batch results in the results folder, added
to the map styled and named as the dock's), ``dialog`` (QGIS's dialog saying a cancel
as a cancel), ``model_widget`` (the dialogs' model combo box, loaded only by a dialog)
and ``rasterize`` (polygons to masks).

Parameters left empty mean what they mean in the dock: the daemon's default model and
the model card's values.
"""

from .provider import OrtholensProvider, register_algorithm  # noqa: F401

__all__ = ["OrtholensProvider", "register_algorithm"]

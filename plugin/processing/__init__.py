"""The Ortholens Processing provider (``ortholens:*`` algorithms, Processing toolbox,
batch mode, models and ``qgis_process``).

Algorithms: ``ortholens:detect`` (Detect objects: a streaming, resumable batch job of
the daemon, any raster size), ``ortholens:evaluate`` (Evaluate against reference
polygons), ``ortholens:exportchips`` (Export training chips), ``ortholens:batchjobs``
(List / resume / cancel batch jobs).

``ortholens:retrain`` (*Retrain from corrected features*, issue #4) lives in
``plugin/processing/retrain.py``; :class:`~.provider.OrtholensProvider` picks it up when
the module exists. Other algorithms can be added with :func:`~.provider.register_algorithm`.
"""

from .provider import OrtholensProvider, register_algorithm  # noqa: F401

__all__ = ["OrtholensProvider", "register_algorithm"]

"""The engine's batch jobs in QGIS: the job table (state, progress, area, model,
output) with Resume, Cancel and Open, and a batch job's result as a map layer.

* :mod:`.rows`       a job as a row of the table, and which actions it allows (no
  widgets);
* :mod:`.results`    a batch job's GeoPackage as a styled, named result layer;
* :mod:`.tasks`      listing and cancelling jobs, and resuming one, off the UI thread;
* :mod:`.dialog`     the job table (:class:`~.dialog.BatchJobsDialog`);
* :mod:`.controller` the dock's *Batch jobs…* button and the dialog.
"""

"""Streaming detection over rasters of any size, region by region, with results identical
to one in-extent detection: ``regions`` cuts the model-GSD grid into regions and detects
the objects each region owns (exactly once, whatever the region order), and holds the
``local`` executor; ``distributed`` is the ``ray`` executor, which runs the same region
workers in Ray actors; ``gpkg`` appends region results to the output GeoPackage. The
job store, resumption and the choice of executor belong to the daemon
(``backend.daemon.batch_runner``): nothing here knows about jobs.
"""

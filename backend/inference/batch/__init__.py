"""Streaming detection over rasters of any size, chunk by chunk, with results identical
to one in-extent detection: ``chunks`` cuts the model-GSD grid into chunks and detects
the objects each chunk owns (exactly once, whatever the chunk order), and holds the
``local`` executor; ``distributed`` is the ``ray`` executor, which runs the same chunk
workers in Ray actors; ``gpkg`` appends chunk results to the output GeoPackage. The
job store, resumption and the choice of executor belong to the daemon
(``backend.daemon.batch_runner``): nothing here knows about jobs.
"""

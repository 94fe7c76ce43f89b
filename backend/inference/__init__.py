"""Inference: from a raster and a model card to typed polygons. ``raster`` opens a
source, plans the model-GSD grid and reads tiles; ``tiling`` lays overlapping tiles and
stitches their probabilities without seams; ``predictors`` runs a model (ONNX Runtime,
PyTorch, ensembles); ``postprocess`` turns probabilities into clean polygons; ``detect``
chains them into one in-extent detection (:func:`~backend.inference.detect.run_detect`);
the ``batch`` package does the same region by region for rasters of any size. This layer
sits above ``backend.models`` and below ``backend.learning`` and ``backend.daemon``: it
knows nothing of jobs, queues or sockets.
"""

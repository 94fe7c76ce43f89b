"""Tools: command-line programs for measuring and demonstrating Ortholens, run by
``build.py`` (``python -m tools.<name>``), never imported by the plugin, the protocol
or the backend. With the backend environment: :mod:`~tools.evaluate` (held-out
accuracy), :mod:`~tools.retrain_eval` (the retrain loop on real data),
:mod:`~tools.bench` (throughput and latency), :mod:`~tools.loadtest` (concurrent
clients), :mod:`~tools.peakram` (daemon memory of batch jobs) and :mod:`~tools.imports`
(the import rules); with the QGIS environment: :mod:`~tools.demo` and
:mod:`~tools.screenshot`. :mod:`~tools.common` holds what the measuring tools share.
"""

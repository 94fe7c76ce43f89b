"""The Ortholens daemon: the ZeroMQ process the QGIS plugin talks to. ``main`` is the
command line (``python -m backend``); ``server`` owns the sockets, answers requests and
runs jobs on worker threads; ``jobs`` defines what a queued job is and the fair queue;
``access`` holds the token and allowed-folder rules; ``batch_service`` handles the
``batch`` / ``jobs`` / ``resume`` requests on its own thread, ``batch_runner`` runs a
stored batch job exactly once across crashes and ``jobstore`` keeps the jobs in SQLite.
It is the top layer of the backend: it may use ``backend.inference``,
``backend.learning``, ``backend.models`` and ``protocol``, and nothing imports it but
the command line and the tools.
"""

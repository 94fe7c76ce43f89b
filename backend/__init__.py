"""Ortholens inference daemon (``python -m backend``): trainer, model registry, server."""

__version__ = "0.1.0"

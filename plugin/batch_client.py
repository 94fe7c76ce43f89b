"""Batch jobs from the client side: submit, follow, list, resume, cancel.

Pure Python + pyzmq + :mod:`plugin.protocol`, like :mod:`plugin.client` (whose
:class:`~plugin.client.OrtholensClient` it drives); used by the Processing algorithms,
the tests and scripts::

    from plugin.client import OrtholensClient
    from plugin.batch_client import run_batch, list_jobs, resume_batch

    with OrtholensClient("tcp://127.0.0.1:5591") as c:
        result = run_batch(c, {"kind": "file", "path": "/data/mosaic.vrt"},
                           "pv-unet-r18", "/data/panels.gpkg", chunk_px=2048)
        print(result["stats"]["count"], "polygons in", result["stats"]["out_path"])

A batch job runs on in the daemon when its client goes away; :func:`follow_job` can be
interrupted (``is_cancelled``) with ``cancel=False`` to detach instead of cancelling.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Optional, Sequence

from . import protocol as P
from .client import (
    DaemonUnavailable,
    JobCancelled,
    OrtholensClient,
    _raise_if_error,
)


def submit_batch(client: OrtholensClient, source: Dict[str, Any], model: str,
                 out_path: str, extent: Optional[Sequence[float]] = None,
                 extent_crs: Optional[str] = None, **options: Any) -> Dict[str, Any]:
    """Send a ``batch`` request; returns the ``accepted`` reply ({job_id, id}).

    Args:
        source: ``{"kind": "file", "path": ...}`` (a GeoTIFF, VRT, ... the daemon reads).
        model: model card id.
        out_path: the GeoPackage to write (must not exist unless ``overwrite=True``).
        extent, extent_crs: area to cover (default: the whole raster).
        **options: ``layer``, ``overwrite``, ``chunk_px``, ``halo_px``, ``executor``
            ("local" / "ray"), ``threshold``, ``min_area_m2``, ``simplify_m``,
            ``bands``, ``batch_size``.

    Raises:
        DaemonError: refused (``.code``); DaemonUnavailable; protocol.ProtocolError.
    """
    header = P.request("batch", source=source, model=model, out_path=out_path,
                       extent=None if extent is None else [float(v) for v in extent],
                       extent_crs=extent_crs, token=client.token, **options)
    return _accepted(client, header)


def resume_batch_request(client: OrtholensClient, job_id: str) -> Dict[str, Any]:
    """Send ``resume``; returns the ``accepted`` reply."""
    return _accepted(client, P.request("resume", job_id=job_id, token=client.token))


def _accepted(client: OrtholensClient, header: Dict[str, Any]) -> Dict[str, Any]:
    return client._submit(header)


def follow_job(client: OrtholensClient, request_id: str, job_id: str,
               on_progress: Optional[Callable[[float, str], None]] = None,
               is_cancelled: Optional[Callable[[], bool]] = None,
               job_timeout_s: float = 3600.0, cancel: bool = True) -> Dict[str, Any]:
    """Wait for the events of an accepted batch job until its ``result``.

    Args:
        request_id: the ``id`` of the ``batch`` / ``resume`` request.
        on_progress: called as (fraction 0..1, message).
        is_cancelled: polled about every 0.1 s; once true the job is cancelled
            (``cancel=True``) or left running in the daemon (``cancel=False``), and
            :class:`~plugin.client.JobCancelled` is raised.
        job_timeout_s: longest silence tolerated, seconds.

    Returns:
        The ``result`` header (``stats`` holds ``out_path``, ``layer``, ``count``...).

    Raises:
        DaemonError, JobCancelled, DaemonUnavailable.
    """
    heard = time.monotonic()
    while True:
        if is_cancelled is not None and is_cancelled():
            if cancel:
                client._cancel_quietly(job_id)
            raise JobCancelled(job_id)
        event = client._receive(request_id, 0.1)
        now = time.monotonic()
        if event is None:
            if now - heard > job_timeout_s:
                raise DaemonUnavailable(f"no news of batch job {job_id} for "
                                        f"{job_timeout_s:g} s")
            continue
        heard = now
        kind = event.get("type")
        if kind == "progress":
            if on_progress is not None:
                on_progress(float(event.get("fraction", 0.0)), str(event.get("message", "")))
        elif kind == "result":
            return event
        elif kind == "error":
            _raise_if_error(event)
        elif kind == "cancelled":
            raise JobCancelled(job_id)


def run_batch(client: OrtholensClient, source: Dict[str, Any], model: str, out_path: str,
              extent: Optional[Sequence[float]] = None, extent_crs: Optional[str] = None,
              on_progress: Optional[Callable[[float, str], None]] = None,
              is_cancelled: Optional[Callable[[], bool]] = None,
              job_timeout_s: float = 3600.0, **options: Any) -> Dict[str, Any]:
    """:func:`submit_batch` then :func:`follow_job`; returns the ``result`` header."""
    acc = submit_batch(client, source, model, out_path, extent, extent_crs, **options)
    return follow_job(client, acc["id"], acc["job_id"], on_progress, is_cancelled,
                      job_timeout_s)


def resume_batch(client: OrtholensClient, job_id: str,
                 on_progress: Optional[Callable[[float, str], None]] = None,
                 is_cancelled: Optional[Callable[[], bool]] = None,
                 job_timeout_s: float = 3600.0) -> Dict[str, Any]:
    """Resume a stored batch job and wait for its ``result``."""
    acc = resume_batch_request(client, job_id)
    return follow_job(client, acc["id"], job_id, on_progress, is_cancelled, job_timeout_s)


def list_jobs(client: OrtholensClient, job_id: Optional[str] = None) -> List[Dict[str, Any]]:
    """The daemon's batch jobs (newest first; see ``protocol``'s ``jobs`` reply)."""
    return list(client._call("jobs", job_id=job_id)["jobs"])


def cancel_job(client: OrtholensClient, job_id: str) -> Dict[str, Any]:
    """Cancel a queued or running batch job (it stays resumable)."""
    return client.cancel(job_id)


__all__ = ["submit_batch", "resume_batch_request", "follow_job", "run_batch",
           "resume_batch", "list_jobs", "cancel_job", "JobCancelled"]

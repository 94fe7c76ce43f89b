"""Client of the Ortholens daemon: pure Python + pyzmq + :mod:`protocol.framing`.

It imports neither ``qgis`` nor ``torch``: it runs inside QGIS's Python and in the
backend's tests alike. numpy is imported only when pixels are sent.

:class:`OrtholensClient` talks to a running daemon (over a
:class:`~protocol.connection.DaemonConnection`); starting one is
:mod:`protocol.launcher`'s (``start_daemon``, ``ensure_daemon``).
"""

from __future__ import annotations

import logging
import subprocess
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import protocol as P
from .connection import POLL_S, DaemonConnection, raise_if_error
from .errors import DaemonUnavailable, JobCancelled
from .importing import ImportParams
from .inventory import InventoryParams
from .params import BatchParams, DetectParams, RetrainParams
from .review import RegionParams
from .version_params import DeleteParams, VersionsParams
from .uploading import PixelUploads

log = logging.getLogger("ortholens.client")

DEFAULT_ENDPOINT = P.DEFAULT_ENDPOINT


class OrtholensClient(PixelUploads, DaemonConnection):
    """A client of the daemon: its requests, and the jobs they start followed to their
    end, over a :class:`~protocol.connection.DaemonConnection`.

    Not thread-safe: use one client per thread. Replies are matched to requests by
    their ``id``; stale replies (to requests that timed out) are skipped.

    Args:
        endpoint: ``tcp://host:port`` of the daemon.
        token: sent with every request when the daemon requires one.
        timeout_s: how long to wait for the first reply to any request, seconds.
        clock: the monotonic clock, seconds, of every timeout: the replies', the job
            timeouts and the liveness checks of :meth:`detect` (tests pass a clock
            they move by hand; see :class:`~protocol.connection.DaemonConnection`).

    Raises (all methods that talk to the daemon):
        DaemonUnavailable: no reply within ``timeout_s``; the socket is recreated, so
            the client stays usable.
        DaemonError: the daemon answered with an error.
        protocol.ProtocolError: the request itself is invalid (checked before sending).
    """

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, token: Optional[str] = None,
                 timeout_s: float = 5.0, clock: Callable[[], float] = time.monotonic):
        super().__init__(endpoint, token, timeout_s, clock)
        #: the daemon process when ``protocol.launcher.ensure_daemon`` started one,
        #: else None.
        self.process: Optional[subprocess.Popen] = None

    # ------------------------------------------------------------------ requests

    def ping(self, timeout_s: Optional[float] = None) -> Dict[str, Any]:
        """``pong`` header: {version, protocol, device, models: [ids], jobs: int}.

        Args:
            timeout_s: overrides the client's ``timeout_s`` for this call.
        """
        return self._call("ping", timeout_s)

    def models(self) -> List[Dict[str, Any]]:
        """Model cards (``ModelCard.public()`` dicts) the daemon offers."""
        return list(self._call("models")["models"])

    def status(self, job_id: Optional[str] = None) -> List[Dict[str, Any]]:
        """``[{job_id, state, fraction, message}]`` of the last hour, or of ``job_id``.

        Raises:
            DaemonError: ``not_found`` for an unknown ``job_id``.
        """
        return list(self._call("status", job_id=job_id)["jobs"])

    def cancel(self, job_id: str) -> Dict[str, Any]:
        """Ask the daemon to cancel ``job_id``; returns the ``cancelled`` reply
        ({job_id, state}: the job's state after the request).

        Raises:
            DaemonError: ``not_found`` for an unknown job.
        """
        return self._call("cancel", job_id=job_id)

    def detect(self, params: DetectParams, pixels: Any = None,
               on_progress: Optional[Callable[[float, str], None]] = None,
               is_cancelled: Optional[Callable[[], bool]] = None,
               job_timeout_s: float = 600.0, liveness_s: float = 2.0) -> Dict[str, Any]:
        """Run a detection job and wait for its result.

        Liveness: whenever the job has been silent for ``liveness_s``, the client asks
        the daemon for the job's ``status``. No answer within ``timeout_s`` means the
        daemon died or hangs (killed, crashed, machine asleep): :class:`DaemonUnavailable`
        is raised then, within ``liveness_s + timeout_s`` seconds, not after
        ``job_timeout_s`` (all three measured with the client's ``clock``). A daemon
        that no longer knows the job (restarted) gives the same error.

        Args:
            params: what to detect where (:class:`~protocol.params.DetectParams`).
            pixels: for a :class:`~protocol.params.PixelSource`: array (bands, H, W),
                dtype in ``protocol.ALLOWED_DTYPES``. Do not modify it while the call
                runs.
            on_progress: called as ``on_progress(fraction 0..1, message)``.
            is_cancelled: polled about every 0.1 s; once true the job is cancelled.
            job_timeout_s: longest time without news of the job once it is accepted,
                seconds: no event from a running job (a status answer saying that the
                job still waits in the queue counts as news).
            liveness_s: silence after which the daemon is asked for the job's status.

        Returns:
            The ``result`` header: {job_id, crs, features: [{wkt, class, class_id,
            score, agreement, area_m2, model, model_version}], stats, ...}.

        Raises:
            DaemonError: the request was rejected or the job failed (``.code``).
            JobCancelled: ``is_cancelled()`` turned true, or the job was cancelled.
            DaemonUnavailable: no ``accepted`` within ``timeout_s``; the daemon stopped
                answering status checks (dead) or lost the job; or no news of the job
                for ``job_timeout_s``.
            protocol.ProtocolError: invalid parameters (nothing is sent).
        """
        return self._job(params.to_header(self.token), _arrays(pixels), on_progress,
                         is_cancelled, job_timeout_s, liveness_s)

    def retrain(self, params: RetrainParams, pixels: Any = None,
                on_progress: Optional[Callable[[float, str], None]] = None,
                is_cancelled: Optional[Callable[[], bool]] = None,
                job_timeout_s: float = 600.0, liveness_s: float = 2.0) -> Dict[str, Any]:
        """Fine-tune a model on the user's corrections and wait for the outcome.

        Args:
            params: the corrections and settings (:class:`~protocol.params.RetrainParams`).
            pixels: for a pixel source, its array (bands, H, W).
            on_progress, is_cancelled, job_timeout_s, liveness_s: as :meth:`detect`.

        Returns:
            The ``result`` header; ``result["retrain"]`` is the report (``accepted``,
            ``reason``, ``model``, ``active``, ``before``, ``after``, ...).

        Raises:
            As :meth:`detect`.
        """
        return self._job(params.to_header(self.token), _arrays(pixels), on_progress,
                         is_cancelled, job_timeout_s, liveness_s)

    def region(self, params: RegionParams, job_timeout_s: float = 60.0
               ) -> Dict[str, Any]:
        """The object under a click (a ``region`` job, ``protocol.review``): the
        ``result`` header, ``features`` holding the grown polygon or nothing.

        Raises:
            As :meth:`detect`.
        """
        return self._job(params.to_header(self.token), [], None, None, job_timeout_s, 2.0)

    def inventory(self, params: InventoryParams,
                  on_progress: Optional[Callable[[float, str], None]] = None,
                  is_cancelled: Optional[Callable[[], bool]] = None,
                  job_timeout_s: float = 600.0, liveness_s: float = 2.0) -> Dict[str, Any]:
        """Make the solar inventory of :class:`~protocol.inventory.InventoryParams`
        and wait for it (arguments and errors as :meth:`detect`). Returns the ``result``
        header: its ``stats`` hold ``outputs`` (paths), ``totals``, ``per_class``,
        ``crs_note``, ``change`` and ``warnings`` (``docs/inventory.md``)."""
        return self._job(params.to_header(self.token), [], on_progress, is_cancelled,
                         job_timeout_s, liveness_s)

    def submit_batch(self, params: BatchParams) -> Dict[str, Any]:
        """Send a ``batch`` request; returns the ``accepted`` reply ({job_id, id}).

        Raises:
            DaemonError: refused (``.code``); DaemonUnavailable; protocol.ProtocolError.
        """
        return self._submit(params.to_header(self.token))

    def batch(self, params: BatchParams,
              on_progress: Optional[Callable[[float, str], None]] = None,
              is_cancelled: Optional[Callable[[], bool]] = None,
              job_timeout_s: float = 3600.0) -> Dict[str, Any]:
        """:meth:`submit_batch` then :meth:`follow`; returns the ``result`` header
        (``stats`` holds ``out_path``, ``layer``, ``count``...)."""
        acc = self.submit_batch(params)
        return self.follow(acc["id"], acc["job_id"], on_progress, is_cancelled,
                           job_timeout_s)

    def resume(self, job_id: str,
               on_progress: Optional[Callable[[float, str], None]] = None,
               is_cancelled: Optional[Callable[[], bool]] = None,
               job_timeout_s: float = 3600.0) -> Dict[str, Any]:
        """Resume a stored batch job and wait for its ``result``.

        Raises:
            DaemonError: ``not_found`` for an unknown job; as :meth:`follow`.
        """
        acc = self.resume_request(job_id)
        return self.follow(acc["id"], job_id, on_progress, is_cancelled, job_timeout_s)

    def resume_request(self, job_id: str) -> Dict[str, Any]:
        """Send ``resume``; returns the ``accepted`` reply."""
        return self._submit(P.request("resume", job_id=job_id, token=self.token))

    def jobs(self, job_id: Optional[str] = None) -> List[Dict[str, Any]]:
        """The daemon's batch jobs (newest first; see ``docs/protocol.md``'s ``jobs``)."""
        return list(self._call("jobs", job_id=job_id)["jobs"])

    def follow(self, request_id: str, job_id: str,
               on_progress: Optional[Callable[[float, str], None]] = None,
               is_cancelled: Optional[Callable[[], bool]] = None,
               job_timeout_s: float = 3600.0, cancel: bool = True) -> Dict[str, Any]:
        """Wait for the events of an accepted batch job until its ``result``.

        Args:
            request_id: the ``id`` of the ``batch`` / ``resume`` request.
            job_id: the job.
            on_progress: called as (fraction 0..1, message).
            is_cancelled: polled about every 0.1 s; once true the job is cancelled
                (``cancel=True``) or left running in the daemon (``cancel=False``), and
                :class:`~protocol.errors.JobCancelled` is raised.
            job_timeout_s: longest silence tolerated, seconds.

        Returns:
            The ``result`` header.

        Raises:
            DaemonError, JobCancelled, DaemonUnavailable.
        """
        heard = self.clock()
        while True:
            if is_cancelled is not None and is_cancelled():
                if cancel:
                    self._cancel_quietly(job_id)
                raise JobCancelled(f"job {job_id} was cancelled", job_id=job_id)
            event = self._poll_reply(request_id, POLL_S)
            now = self.clock()
            if event is None:
                if now - heard > job_timeout_s:
                    raise DaemonUnavailable(f"no news of batch job {job_id} for "
                                            f"{job_timeout_s:g} s")
                continue
            heard = now
            result = _job_event(event, job_id, on_progress)
            if result is not None:
                return result

    def versions(self, model: str, extent: Optional[Sequence[float]] = None,
                 extent_crs: Optional[str] = None) -> Dict[str, Any]:
        """``{model, active, versions: [...]}`` of ``model``'s lineage; with an extent
        (:class:`~protocol.version_params.VersionsParams`) also ``here``, ``{model,
        why}``: the version in use there."""
        return self._call("versions", **VersionsParams(model, extent, extent_crs).wire_fields())

    def delete(self, model: str, roll_back: bool = False) -> Dict[str, Any]:
        """Delete the user version ``model`` (:class:`~protocol.version_params.
        DeleteParams`; ``roll_back``: the user confirmed deleting a version in use);
        returns :meth:`versions` plus ``deleted`` and ``rolled_back``.

        Raises:
            DaemonError: ``invalid_input`` for a shipped model or a version in use
                without ``roll_back``; ``not_found`` for an unknown version.
        """
        return self._call("delete", **DeleteParams(model, roll_back or None).wire_fields())

    def activate(self, model: str) -> Dict[str, Any]:
        """Make ``model`` (``<id>`` or ``<id>@<n>``) the active version; returns
        :meth:`versions`."""
        return self._call("activate", model=model)

    def rollback(self, model: str) -> Dict[str, Any]:
        """Make the parent of the active version of ``model``'s lineage active; returns
        :meth:`versions`.

        Raises:
            DaemonError: ``invalid_input`` when the shipped model is already active.
        """
        return self._call("rollback", model=model)

    def keep(self, model: str, pending: str, note: Optional[str] = None) -> Dict[str, Any]:
        """Keep a retrain candidate the acceptance rule did not accept: the report's
        ``pending`` becomes a version of ``model``'s lineage (in use in its area, or
        active); returns :meth:`versions` plus ``kept``, the new version's id.

        Raises:
            DaemonError: ``not_found`` when the candidate is gone (kept already, or
                removed after a week).
        """
        extra = {"note": note} if note else {}
        # writing the version may export it to ONNX first: up to a minute on a busy CPU
        return self._call("keep", timeout_s=max(self.timeout_s, 60.0), model=model,
                          pending=pending, **extra)

    def import_model(self, params: ImportParams) -> Dict[str, Any]:
        """Make an ONNX file on the daemon's computer one of its models; returns the new
        model's card (a ``models`` entry).

        Raises:
            DaemonError: ``invalid_input``, ``field`` ``"values"``: metadata missing
                (``protocol.importing.missing_keys``), ``"path"``: no segmenter;
                ``not_found``: no file; ``forbidden``: outside ``ORTHOLENS_ROOTS``.
        """
        # reading and running the graph once takes seconds for a large model
        return dict(self._call("import_model", timeout_s=max(self.timeout_s, 60.0),
                               **params.wire_fields())["card"])

    def _job(self, header: Dict[str, Any], arrays: Sequence[Any],
             on_progress: Optional[Callable[[float, str], None]],
             is_cancelled: Optional[Callable[[], bool]], job_timeout_s: float,
             liveness_s: float) -> Dict[str, Any]:
        """Send a job request and follow it to its end (see :meth:`detect`)."""
        rid = header["id"]
        job_id = self._submit(header, arrays)["job_id"]
        finished = False
        probe_id: Optional[str] = None  # id of the status check awaiting an answer
        probe_sent = 0.0
        done_probes = 0  # status answers saying the job ended while no event came
        try:
            heard = contact = self.clock()
            while True:
                if is_cancelled is not None and is_cancelled():
                    self._cancel_quietly(job_id)
                    finished = True
                    raise JobCancelled(f"job {job_id} was cancelled", job_id=job_id)
                event = self._poll_reply((rid, probe_id) if probe_id else rid, POLL_S)
                now = self.clock()
                if event is None:
                    if probe_id is not None and now - probe_sent > self.timeout_s:
                        finished = True  # nobody to cancel it with
                        self._reset()
                        raise DaemonUnavailable(
                            f"the daemon at {self.endpoint} stopped answering while job "
                            f"{job_id} ran (no answer to a status check within "
                            f"{self.timeout_s:g} s): it crashed or was killed")
                    if now - heard > job_timeout_s:
                        raise DaemonUnavailable(f"no news of job {job_id} for "
                                                f"{job_timeout_s:g} s")
                    if probe_id is None and now - contact > liveness_s:
                        probe = P.request("status", job_id=job_id, token=self.token)
                        try:
                            self._send(probe)
                        except DaemonUnavailable:
                            finished = True
                            raise DaemonUnavailable(
                                f"the daemon at {self.endpoint} stopped answering while "
                                f"job {job_id} ran: it crashed or was killed") from None
                        probe_id, probe_sent = probe["id"], now
                    continue
                contact = now
                if probe_id is not None and event.get("id") == probe_id:
                    probe_id = None
                    if event.get("type") == "error":
                        if event.get("code") == P.E_NOT_FOUND:
                            finished = True
                            raise DaemonUnavailable(
                                f"the daemon at {self.endpoint} no longer knows job "
                                f"{job_id}: it was restarted while the job ran")
                        continue  # e.g. a refused status request: the daemon lives
                    jobs = event.get("jobs") or [{}]
                    state = jobs[0].get("state") if isinstance(jobs[0], dict) else None
                    if state == "queued":
                        heard = now  # waiting its turn: nothing to report
                    elif state in ("done", "error", "cancelled"):
                        done_probes += 1  # its terminal event may still be on its way
                        if done_probes >= 3:
                            finished = True
                            raise DaemonUnavailable(
                                f"job {job_id} ended ({state}) but its outcome never "
                                f"reached this client; run it again")
                    continue
                heard = now
                finished = event.get("type") in _TERMINAL_EVENTS
                result = _job_event(event, job_id, on_progress)
                if result is not None:
                    return result
        finally:
            if not finished:  # timeout, callback exception, KeyboardInterrupt...
                self._cancel_quietly(job_id)


#: Events that end a job.
_TERMINAL_EVENTS = ("result", "error", "cancelled")


def _job_event(event: Dict[str, Any], job_id: str,
               on_progress: Optional[Callable[[float, str], None]]
               ) -> Optional[Dict[str, Any]]:
    """Act on one event of a job: a ``progress`` goes to ``on_progress`` and None is
    returned, a ``result`` is returned, an ``error`` or ``cancelled`` raises; other
    events are logged and skipped.

    Raises:
        DaemonError: an ``error`` event (its code and message).
        JobCancelled: a ``cancelled`` event.
    """
    kind = event.get("type")
    if kind == "progress":
        if on_progress is not None:
            on_progress(float(event.get("fraction", 0.0)), str(event.get("message", "")))
    elif kind == "result":
        return event
    elif kind == "error":
        raise_if_error(event)
    elif kind == "cancelled":
        raise JobCancelled(f"job {job_id} was cancelled", job_id=job_id)
    else:
        log.warning("ignoring a %r event of job %s", kind, job_id)
    return None


def _arrays(pixels: Any) -> List[Any]:
    """The array frames of a job request: ``[pixels]`` as C-contiguous, or none."""
    if pixels is None:
        return []
    import numpy as np
    return [np.ascontiguousarray(pixels)]

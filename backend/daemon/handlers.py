"""The request handlers of the daemon: one function a request type, and the table
:data:`HANDLERS` the server (``backend.daemon.server``) dispatches with.

A handler is ``handler(server, identity, header, arrays) -> [(identity, reply), ...]``:
``server`` the :class:`backend.daemon.server.Server`, ``identity`` the ROUTER identity
of the client, ``header`` the validated request (``protocol.schema``) with every path
it names checked and resolved (``backend.daemon.access.Access.check_request``),
``arrays`` its array frames. It returns the replies to send, in order, and raises an
``protocol.errors.OrtholensError`` whose code the client gets as an ``error`` reply.

Families: the daemon's own (``ping``, ``models``, ``status``, ``cancel``); jobs queued
on the interactive workers (``detect``, ``region``, ``retrain``); the user model versions
(``versions``, ``activate``, ``rollback``, ``keep``, ``delete``:
``backend.models.versions``); importing an ONNX file as a model (``import_model``:
``backend.models.imported``); pixel uploads (``upload``, ``window``:
``backend.daemon.uploads``); batch jobs (``batch``, ``jobs``, ``resume``:
``backend.daemon.batch_service``).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

import protocol as P
from backend import __version__
from backend.daemon.jobs import CANCELLED, QUEUED, Job

log = logging.getLogger("ortholens.server")

Replies = List[Tuple[bytes, Dict[str, Any]]]
#: ``handler(server, identity, header, arrays) -> replies``
Handler = Callable[..., Replies]


# ------------------------------------------------------------------ the daemon's own

def _precision() -> str:
    """The engine's precision setting for ``pong`` (``"invalid"`` for a bad value, which
    each model load reports)."""
    from backend.config import precision
    try:
        return precision()
    except Exception:  # noqa: BLE001 - an InputError; reported where a model loads
        return "invalid"


def _cards() -> list:
    from backend.models.catalog import list_cards
    return list_cards()


def on_ping(server, identity, header, arrays) -> Replies:
    """``pong``: version, protocol, device, model ids, the jobs queued or running, the
    idle exit (seconds without work after which the engine stops; 0: never) and the
    precision setting (``backend.config.precision``: ``auto`` or ``fp32``)."""
    active = server.table.active_count()
    try:
        ids = [c.id for c in _cards()]
    except Exception as exc:
        log.warning("cannot list models: %s", exc)
        ids = []
    return [(identity, P.reply("pong", header["id"], version=__version__,
                               protocol=P.PROTOCOL_VERSION,
                               device=server.device or "cpu",
                               device_info=server.device_info or {"kind": "cpu"},
                               models=ids, jobs=active, idle_exit_s=server.idle_exit_s,
                               precision=_precision()))]


def on_models(server, identity, header, arrays) -> Replies:
    """The model cards, the default one for the daemon's device marked ``default``, and
    each model a detection naming none chooses from by the layer's GSD marked
    ``gsd_candidate`` (its rank, 0 first; None for the others: ``protocol.choice``)."""
    from backend.models.catalog import default_model_id, gsd_candidates
    cards = _cards()
    cuda = str(server.device or "").startswith("cuda")
    default = default_model_id(cards, cuda)
    rank = {r.id: i for i, r in enumerate(gsd_candidates(cards, cuda))}
    return [(identity, P.reply("models", header["id"],
                               models=[dict(c.public(), default=c.id == default,
                                            gsd_candidate=rank.get(c.id))
                                       for c in cards]))]


def on_status(server, identity, header, arrays) -> Replies:
    """The state of one interactive job (``job_id``) or of all of them."""
    table = server.table
    with table.lock:
        table.prune_locked()
        if "job_id" in header:
            job = table.jobs.get(header["job_id"])
            if job is None:
                raise P.JobError("no such job", P.E_NOT_FOUND)
            jobs = [job.public()]
        else:
            jobs = [j.public() for j in table.jobs.values()]
    return [(identity, P.reply("status", header["id"], jobs=jobs))]


def on_cancel(server, identity, header, arrays) -> Replies:
    """Cancel a batch job, a pixel upload or an interactive job (queued: at once;
    running: at its next batch boundary). The reply goes first, then a queued job's
    terminal event to its submitter."""
    table, job_id = server.table, header["job_id"]
    if job_id not in table.jobs and server.batch.has(job_id):
        return server.batch.cancel(identity, header)
    if job_id not in table.jobs and server.uploads.drop(job_id):
        return [(identity, P.reply("cancelled", header["id"], job_id=job_id,
                                   state=CANCELLED))]
    out = []
    with table.lock:
        job = table.jobs.get(job_id)
        if job is None:
            raise P.JobError("no such job", P.E_NOT_FOUND)
        job.cancel.set()
        if job.state == QUEUED:  # dropped without running
            table.cancel_queued_locked(job)
            out.append((job.identity, P.reply("cancelled", job.request_id,
                                              job_id=job.job_id)))
        state = job.state
    log.info("job %s: cancel requested (%s)", job.job_id, state)
    return [(identity, P.reply("cancelled", header["id"], job_id=job.job_id,
                               state=state))] + out


# ------------------------------------------------------------------ interactive jobs

def _check_room(server, nbytes: int) -> None:
    """Refuse a new job (``busy``) while the daemon stops or its queue is full."""
    table = server.table
    with table.lock:  # only the main loop adds jobs: the check holds until it does
        if server.stopping:
            raise P.JobError("the daemon is shutting down", P.E_BUSY)
        if len(table.queue) >= server.max_queue:
            raise P.JobError(f"the job queue is full ({len(table.queue)} jobs waiting); "
                             f"try again later", P.E_BUSY)
        queued_bytes = sum(a.nbytes for j in table.queue for a in (j.arrays or ()))
        if nbytes and queued_bytes and queued_bytes + nbytes > server.max_queue_bytes:
            raise P.JobError(f"the queued jobs already hold {queued_bytes >> 20} MiB of "
                             f"pixels; try again later", P.E_BUSY)


def on_detect(server, identity, header, arrays) -> Replies:
    """Queue a ``detect`` job (or a ``retrain`` one, see :func:`on_retrain`);
    ``accepted`` names its id. Its paths are checked already (the server's
    ``Access.check_request``), as those of every handler here."""
    request = {k: v for k, v in header.items() if k != "token"}
    upload_id = None
    if header["source"].get("kind") == "upload":
        upload_id = header["source"]["upload_id"]  # the daemon's own file: no roots
    return _queue(server, identity, header, request, arrays, upload_id)


def _queue(server, identity, header, request: Dict[str, Any], arrays,
           upload_id: Optional[str] = None) -> Replies:
    """Queue a job (``request``: the checked header without its token) and answer
    ``accepted``; the job of an ``upload`` source reads that upload's file.

    Raises:
        JobError: ``busy`` while stopping, with a full queue or too many pixels waiting.
    """
    _check_room(server, sum(a.nbytes for a in arrays))
    job_id = uuid.uuid4().hex
    if upload_id is not None:  # the job reads the upload's file, deleted at its end
        request["source"] = {"kind": "file", "path": server.uploads.claim(upload_id, job_id)}
    copies = [np.array(a, copy=True) for a in arrays]  # frames get reused
    job = Job(job_id, header["id"], identity, request, copies)
    server.table.add(job)
    if "source" in request:
        log.info("job %s queued: model %s, %s source", job.job_id, request.get("model"),
                 request["source"].get("kind"))
    else:
        log.info("job %s queued: %s", job.job_id, header["type"])
    # Sent by the main loop before it forwards any event of the job: order holds.
    return [(identity, P.reply("accepted", header["id"], job_id=job.job_id))]


def on_region(server, identity, header, arrays) -> Replies:
    """Queue a ``region`` job (``backend.inference.region``): a short one."""
    request = {k: v for k, v in header.items() if k != "token"}
    return _queue(server, identity, header, request, arrays)


def on_inventory(server, identity, header, arrays) -> Replies:
    """Queue an ``inventory`` job (``backend.reports.job``)."""
    request = {k: v for k, v in header.items() if k != "token"}
    return _queue(server, identity, header, request, arrays)


def on_retrain(server, identity, header, arrays) -> Replies:
    """Queue a ``retrain`` job (``backend.learning.retrain``) like a detection."""
    return on_detect(server, identity, header, arrays)


# ------------------------------------------------------------------ model versions

def _versions_reply(header: Dict[str, Any], fn: Callable[[str], Dict[str, Any]]
                    ) -> Dict[str, Any]:
    d = fn(header["model"])  # VersionError carries its code
    return P.reply("versions", header["id"], **d)


def on_versions(server, identity, header, arrays) -> Replies:
    """The versions of a model, with the one in use in the request's extent when it
    names one (``backend.models.versions.describe_here``)."""
    from backend.models.versions import describe_here
    from protocol.version_params import VersionsParams
    p = VersionsParams.from_header(header)
    return [(identity, _versions_reply(
        header, lambda m: describe_here(m, p.extent, p.extent_crs)))]


def on_delete(server, identity, header, arrays) -> Replies:
    """Delete a user version (``backend.models.version_delete``)."""
    from backend.models.version_delete import delete_version
    from protocol.version_params import DeleteParams
    reply = _versions_reply(
        header, lambda m: delete_version(DeleteParams.from_header(header)))
    log.info("deleted %s (rolled back first: %s)", reply["deleted"], reply["rolled_back"])
    return [(identity, reply)]


def on_activate(server, identity, header, arrays) -> Replies:
    """Make a version the active one."""
    from backend.models.versions import activate
    reply = _versions_reply(header, activate)
    log.info("active version of %s: %s", reply["model"], reply["active"])
    return [(identity, reply)]


def on_rollback(server, identity, header, arrays) -> Replies:
    """Go back to the version active before."""
    from backend.models.versions import rollback
    reply = _versions_reply(header, rollback)
    log.info("rolled back %s to %s", reply["model"], reply["active"])
    return [(identity, reply)]


def on_keep(server, identity, header, arrays) -> Replies:
    """Keep a retrain candidate the rule did not accept (the user's choice)."""
    from backend.models.pending import keep_pending
    reply = _versions_reply(
        header, lambda m: keep_pending(m, header["pending"], header.get("note")))
    log.info("kept candidate %s of %s as %s", header["pending"], reply["model"],
             reply["kept"])
    return [(identity, reply)]


def on_import_model(server, identity, header, arrays) -> Replies:
    """Import an ONNX file on this computer as a model (``backend.models.imported``);
    the reply ``imported`` carries its card."""
    from backend.models.imported import import_onnx
    from protocol.importing import ImportParams
    params = ImportParams.from_header(header)
    path = params.path
    card = import_onnx(path, params.values, params.model)  # errors carry their code
    log.info("imported %s as model %s", path, card.id)
    return [(identity, P.reply("imported", header["id"], card=card.public()))]


# ------------------------------------------------------------------ pixel uploads

def on_upload(server, identity, header, arrays) -> Replies:
    """Open a pixel upload (``backend.daemon.uploads``)."""
    server.uploads.prune(server.table.is_active)
    if server.stopping:
        raise P.JobError("the daemon is shutting down", P.E_BUSY)
    return [(identity, P.reply("upload", header["id"], **server.uploads.open(header)))]


def on_window(server, identity, header, arrays) -> Replies:
    """Store one window of a pixel upload."""
    return [(identity, P.reply("upload", header["id"],
                               **server.uploads.write(header, arrays)))]


# ------------------------------------------------------------------ batch jobs

def on_batch(server, identity, header, arrays) -> Replies:
    """Check, record and queue a batch job (``backend.daemon.batch_service``)."""
    return server.batch.on_batch(identity, header)


def on_jobs(server, identity, header, arrays) -> Replies:
    """List the batch jobs, or one."""
    return server.batch.on_jobs(identity, header)


def on_resume(server, identity, header, arrays) -> Replies:
    """Resume an interrupted batch job."""
    return server.batch.on_resume(identity, header)


#: The handler of each request type (``protocol.schema``).
HANDLERS: Dict[str, Handler] = {
    "ping": on_ping,
    "models": on_models,
    "status": on_status,
    "cancel": on_cancel,
    "detect": on_detect,
    "retrain": on_retrain,
    "region": on_region,
    "inventory": on_inventory,
    "versions": on_versions,
    "activate": on_activate,
    "rollback": on_rollback,
    "keep": on_keep,
    "delete": on_delete,
    "import_model": on_import_model,
    "upload": on_upload,
    "window": on_window,
    "batch": on_batch,
    "jobs": on_jobs,
    "resume": on_resume,
}

__all__ = ["HANDLERS", "Handler", "Replies"]

"""A batch job's regions on a Ray cluster: one actor per worker, each holding a predictor.

:func:`ray_results` is the ``"ray"`` executor of ``backend.daemon.batch_runner.run_batch``
(the ``"local"`` one is ``backend.inference.batch.regions.local_results``): the driver
(the daemon, or any process calling ``run_batch``) plans the job, keeps the job store
and writes the GeoPackage exactly as in a local run; only
:meth:`backend.inference.batch.regions.RegionWorker.process` runs remotely, in
:class:`RegionActor` actors (model loaded once per actor, tile cache per actor). Regions
are handed out by Ray's own ``ray.util.ActorPool`` (``map_unordered``), no scheduler of
ours. Results come back in any order; the exactly-once rule does not care (each region
keeps only the objects whose first pixel it owns), so the polygons are the same as on
one machine, and a killed driver resumes like a local job.

Which cluster:

* ``RAY_ADDRESS`` set (e.g. ``ray://head:10001`` or ``auto`` on a cluster node): that
  cluster. Every node needs this repository and its backend environment at the same
  path, the models (``ORTHOLENS_MODELS``) and the raster at the path the job names
  (a shared file system, or the same copy on each node);
* otherwise a local cluster is started for the job (``ray.init(num_cpus=...)``,
  ``ORTHOLENS_RAY_CPUS``, default all cores) on 127.0.0.1 only, and shut down afterwards.

Workers: ``ORTHOLENS_RAY_WORKERS`` actors (default: the cluster's CPUs divided by
``ORTHOLENS_RAY_CPUS_PER_WORKER``, default 1), each with that many inference threads.
The code reaches the workers through ``runtime_env`` (``PYTHONPATH`` = this repository).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Dict, Iterator, Optional, Sequence

from backend.config import REPO
from backend.inference.batch.regions import RegionResult, RegionWorker
from protocol.errors import E_INVALID_INPUT, JobCancelled, JobError
from protocol.params import BatchParams

log = logging.getLogger("ortholens.distributed")

_PASS_ENV = ("ORTHOLENS_MODELS", "ORTHOLENS_DATA", "ORTHOLENS_TILE_CACHE_MB",
             "ORTHOLENS_GDAL_CACHE_MB")


class RegionActor:
    """Holds one :class:`~backend.inference.batch.regions.RegionWorker` (predictor, reader,
    tile cache).

    Args:
        params: the job's parameters.
        plan: the job's plan (``regions.make_plan``).
        threads: inference threads of this actor (and ``OMP_NUM_THREADS``).

    Raises:
        JobError: unknown or corrupt model, unreadable raster.
    """

    def __init__(self, params: BatchParams, plan: Dict[str, Any], threads: int = 1):
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        predictor = None
        from backend.inference.pipeline import model_errors
        from backend.inference.predictors import (ImportedPredictor, OnnxPredictor,
                                                  cuda_available)
        from backend.models.catalog import load_card
        with model_errors():
            card = load_card(params.detect.model)
            if card.onnx_only:  # not all cores per actor
                predictor = ImportedPredictor(card, threads=threads)
            elif not card.is_ensemble and not cuda_available() and card.onnx_path.is_file():
                predictor = OnnxPredictor(card, threads=threads)
        self.worker = RegionWorker(params, plan, predictor)

    def process(self, idx: int) -> Dict[str, Any]:
        """Region ``idx``'s :class:`RegionResult` as plain data."""
        return self.worker.process(idx).to_dict()

    def ping(self) -> str:
        """``host:pid`` of the actor's process."""
        import socket
        return f"{socket.gethostname()}:{os.getpid()}"


def _runtime_env() -> Dict[str, Any]:
    env = {"PYTHONPATH": os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    for k in _PASS_ENV:
        if os.environ.get(k):
            env[k] = os.environ[k]
    return {"env_vars": env}


def _single_node_mode(ray) -> None:
    """Make the cluster this process starts a single-node one on 127.0.0.1.

    ``ray.init`` turns a loopback ``_node_ip_address`` into the machine's network address;
    only Ray's single-node mode (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, Ray's own
    default on macOS and Windows) keeps the node on the loopback address. Ray reads that
    variable once, into ``ray._private.ray_constants.ENABLE_RAY_CLUSTER``, when it is
    first imported, so an already imported Ray is told through that constant too; the
    processes the cluster starts inherit the variable.
    """
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    constants = getattr(getattr(ray, "_private", None), "ray_constants", None)
    if constants is not None and hasattr(constants, "ENABLE_RAY_CLUSTER"):
        constants.ENABLE_RAY_CLUSTER = False


def init_ray(address: Optional[str] = None, num_cpus: Optional[int] = None) -> bool:
    """Connect to ``address`` / ``RAY_ADDRESS`` or start a local cluster, unless Ray is
    already initialised in this process. Returns True when this call started it.

    Raises:
        JobError: ``invalid_input`` naming ``RAY_ADDRESS`` when the cluster there cannot
            be joined (no head, a wrong or missing token).
    """
    import ray
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: Dict[str, Any] = dict(include_dashboard=False, log_to_driver=False,
                                  runtime_env=_runtime_env())
    if address:
        log.info("connecting to the Ray cluster at %s", address)
        try:
            ray.init(address=address, **kwargs)
        except Exception as exc:  # noqa: BLE001 - Ray raises many kinds for one cause
            try:
                ray.shutdown()
            except Exception:  # noqa: BLE001 - nothing was started
                pass
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:300]
            raise JobError(
                f"cannot use the Ray cluster at RAY_ADDRESS={address}: {reason}. Check "
                f"that its head runs there and that RAY_AUTH_MODE=token and "
                f"RAY_AUTH_TOKEN are the cluster's, in the engine's environment",
                E_INVALID_INPUT) from None
    else:
        cpus = num_cpus or int(os.environ.get("ORTHOLENS_RAY_CPUS", 0)) or os.cpu_count() or 1
        log.info("starting a local Ray cluster with %d CPUs on 127.0.0.1", cpus)
        _single_node_mode(ray)
        ray.init(num_cpus=cpus, **kwargs)
    return True


def ray_results(params: BatchParams, plan: Dict[str, Any], pending: Sequence[int],
                cancelled: Optional[Callable[[], bool]] = None,
                address: Optional[str] = None, num_workers: Optional[int] = None,
                cpus_per_worker: Optional[int] = None) -> Iterator[RegionResult]:
    """Region results of ``pending`` computed by Ray actors, in completion order.

    Raises:
        JobError: a region failed with an input or model error (as locally).
        JobCancelled: ``cancelled()`` turned true (checked between regions).
    """
    import ray
    from ray.util import ActorPool

    pending = list(pending)
    if not pending:
        return
    started = init_ray(address)
    actors = []
    try:
        cpw = cpus_per_worker or int(os.environ.get("ORTHOLENS_RAY_CPUS_PER_WORKER", 1))
        total = int(ray.cluster_resources().get("CPU", 1))
        n = num_workers or int(os.environ.get("ORTHOLENS_RAY_WORKERS", 0)) or max(1, total // cpw)
        n = max(1, min(n, len(pending)))
        remote = ray.remote(num_cpus=cpw)(RegionActor)
        actors = [remote.remote(params, plan, cpw) for _ in range(n)]
        log.info("batch on Ray: %d actor(s) x %d CPU for %d region(s)", n, cpw, len(pending))
        pool = ActorPool(actors)
        for out in pool.map_unordered(lambda a, i: a.process.remote(i), pending):
            if cancelled and cancelled():
                raise JobCancelled()
            yield RegionResult.from_dict(out)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, (JobError, JobCancelled)):
            raise cause from None
        raise
    finally:
        for a in actors:
            try:
                ray.kill(a)
            except Exception:  # already gone
                pass
        if started:
            ray.shutdown()


__all__ = ["RegionActor", "init_ray", "ray_results"]

"""Run tracking: every retrain run written to an MLflow *file store*, without mlflow.

The store is ``<user models>/mlruns`` (:func:`mlruns_dir`); ``mlflow ui
--backend-store-uri <user models>/mlruns`` reads it. :class:`MlflowRun` writes one run:
its parameters, metrics, tags, a text artifact and its end status.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Optional

from backend.models.versions import user_models_dir

#: The experiment every retrain run is filed under.
MLFLOW_EXPERIMENT = "ortholens-retrain"
_RUNNING, _FINISHED, _FAILED, _KILLED = 1, 3, 4, 5
_STATUS = {"RUNNING": _RUNNING, "FINISHED": _FINISHED, "FAILED": _FAILED, "KILLED": _KILLED}


def _yaml_scalar(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    return "'" + str(v).replace("'", "''") + "'"


def _write_yaml(path: Path, d: Dict[str, Any]) -> None:
    lines = []
    for k, v in d.items():
        if isinstance(v, list) and not v:
            lines.append(f"{k}: []")
        else:
            lines.append(f"{k}: {_yaml_scalar(v)}")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", "utf-8")
    os.replace(tmp, path)


def _safe_key(k: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\- ]", "_", str(k))[:250] or "_"


class MlflowRun:
    """One run in an MLflow *file store* (``mlruns/``) without importing mlflow.

    Layout (what ``mlflow ui --backend-store-uri <root>/mlruns`` reads)::

        mlruns/<exp id>/meta.yaml
        mlruns/<exp id>/<run id>/meta.yaml
        mlruns/<exp id>/<run id>/params/<key>     the value
        mlruns/<exp id>/<run id>/metrics/<key>    lines "<ms timestamp> <value> <step>"
        mlruns/<exp id>/<run id>/tags/<key>       the value

    The run's ``mlflow.source.name`` tag names the retrain job,
    :mod:`backend.learning.retrain`.

    Args:
        store: the ``mlruns`` folder.
        name: the run name.
        experiment: experiment name (created with the next free numeric id).
    """

    def __init__(self, store: Path, name: str, experiment: str = MLFLOW_EXPERIMENT):
        self.store = Path(store)
        self.store.mkdir(parents=True, exist_ok=True)
        self.experiment_id = self._experiment(experiment)
        self.run_id = uuid.uuid4().hex
        self.dir = self.store / self.experiment_id / self.run_id
        for sub in ("params", "metrics", "tags", "artifacts"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self.start = int(time.time() * 1000)
        self.name = name
        self._meta(_RUNNING, None)
        self.set_tag("mlflow.runName", name)
        self.set_tag("mlflow.source.type", "LOCAL")
        self.set_tag("mlflow.source.name", "backend.learning.retrain")
        self.set_tag("mlflow.user", _user())

    def _experiment(self, name: str) -> str:
        now = int(time.time() * 1000)
        if not (self.store / "0" / "meta.yaml").is_file():
            (self.store / "0").mkdir(parents=True, exist_ok=True)
            _write_yaml(self.store / "0" / "meta.yaml", {
                "artifact_location": (self.store / "0").resolve().as_uri(),
                "creation_time": now, "experiment_id": "0", "last_update_time": now,
                "lifecycle_stage": "active", "name": "Default"})
        ids = []
        for meta in self.store.glob("*/meta.yaml"):
            try:
                text = meta.read_text("utf-8")
            except OSError:
                continue
            if re.search(r"^name: '?" + re.escape(name) + r"'?$", text, re.M):
                return meta.parent.name
            if meta.parent.name.isdigit():
                ids.append(int(meta.parent.name))
        eid = str(max(ids, default=0) + 1)
        (self.store / eid).mkdir(parents=True, exist_ok=True)
        _write_yaml(self.store / eid / "meta.yaml", {
            "artifact_location": (self.store / eid).resolve().as_uri(),
            "creation_time": now, "experiment_id": eid, "last_update_time": now,
            "lifecycle_stage": "active", "name": name})
        return eid

    def _meta(self, status: int, end: Optional[int]) -> None:
        _write_yaml(self.dir / "meta.yaml", {
            "artifact_uri": (self.dir / "artifacts").resolve().as_uri(),
            "end_time": end, "entry_point_name": "", "experiment_id": self.experiment_id,
            "lifecycle_stage": "active", "name": self.name, "run_id": self.run_id,
            "run_name": self.name, "run_uuid": self.run_id, "source_name": "",
            "source_type": 4, "source_version": "", "start_time": self.start,
            "status": status, "tags": [], "user_id": _user()})

    def log_param(self, key: str, value: Any) -> None:
        """Write parameter ``key`` (its text, at most 6000 characters)."""
        (self.dir / "params" / _safe_key(key)).write_text(str(value)[:6000], "utf-8")

    def log_params(self, params: Dict[str, Any]) -> None:
        """Write every parameter of ``params`` (dicts and lists as JSON)."""
        for k, v in params.items():
            self.log_param(k, json.dumps(v) if isinstance(v, (dict, list)) else v)

    def log_metric(self, key: str, value: float, step: int = 0) -> None:
        """Append a value of metric ``key`` at ``step``; values that are not numbers,
        and NaN, are not written."""
        try:
            v = float(value)
        except (TypeError, ValueError):
            return
        if v != v:  # NaN: MLflow accepts it, but it helps nobody
            return
        with open(self.dir / "metrics" / _safe_key(key), "a", encoding="utf-8") as f:
            f.write(f"{int(time.time() * 1000)} {v!r} {int(step)}\n")

    def set_tag(self, key: str, value: Any) -> None:
        """Write tag ``key`` (its text, at most 5000 characters)."""
        (self.dir / "tags" / _safe_key(key)).write_text(str(value)[:5000], "utf-8")

    def log_artifact_text(self, name: str, text: str) -> None:
        """Write ``text`` as the artifact file ``name``."""
        (self.dir / "artifacts" / _safe_key(name)).write_text(text, "utf-8")

    def end(self, status: str = "FINISHED") -> None:
        """End the run: ``"FINISHED"``, ``"FAILED"`` or ``"KILLED"``."""
        self._meta(_STATUS.get(status, _FINISHED), int(time.time() * 1000))


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "user"


def mlruns_dir(root: Optional[Path] = None) -> Path:
    """``<user models>/mlruns``: the MLflow file store of retrain runs."""
    return (Path(root) if root else user_models_dir()) / "mlruns"

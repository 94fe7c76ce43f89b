"""Names of results: the GeoPackage's path, file-safe names, the layer's name in the
Layers panel and its run number in the project."""

from __future__ import annotations

import datetime as _dt
import re
from pathlib import Path
from typing import Optional

from qgis.core import QgsApplication, QgsProject

#: Custom layer property holding a result layer's run number; the project entry
#: ``ortholens/result_runs`` holds the highest one given.
RUN_PROPERTY = "ortholens/run"


def safe_name(text: str, maxlen: int = 48) -> str:
    """``text`` reduced to ``[A-Za-z0-9_-]`` (for file and GeoPackage table names)."""
    out = re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_")
    return (out or "layer")[:maxlen]


def default_result_path(stem: str, project: Optional[QgsProject] = None,
                        now: Optional[_dt.datetime] = None,
                        folder: Optional[str] = None) -> str:
    """A new, unique ``.gpkg`` path for a result.

    Args:
        stem: words for the file name (made file-safe), e.g. ``"ortho_pv-unet-efl0"``.
        project: the project (default ``QgsProject.instance()``). When it is saved to
            a file, the result goes into its home folder; otherwise into
            ``<QGIS profile>/ortholens/results/`` (created if needed).
        now: the time stamp to use (default: now, local time).
        folder: the results folder the user chose (created if needed); it wins over
            the project's folder and the profile's.

    Returns:
        An absolute path that does not exist yet: ``ortholens_<stem>_<YYYYmmdd-HHMMSS>.gpkg``,
        with ``_2``, ``_3``... appended on collision.
    """
    project = project or QgsProject.instance()
    if folder:
        folder = Path(folder).expanduser()
    elif project.fileName():
        folder = Path(project.homePath() or Path(project.fileName()).parent)
    else:
        folder = Path(QgsApplication.qgisSettingsDirPath()) / "ortholens" / "results"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = (now or _dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    base = f"ortholens_{safe_name(stem)}_{stamp}"
    path = folder / f"{base}.gpkg"
    n = 2
    while path.exists():
        path = folder / f"{base}_{n}.gpkg"
        n += 1
    return str(path.resolve())


def next_result_run(project: Optional[QgsProject] = None) -> int:
    """The run number the next result layer of ``project`` gets: one more than the
    highest given so far (the project entry ``ortholens/result_runs``, saved with the
    project, or a result layer's :data:`RUN_PROPERTY`), so numbers are not reused when
    a layer is removed. 1 in a project without results."""
    project = project or QgsProject.instance()
    last, _ = project.readNumEntry("ortholens", "result_runs", 0)
    for layer in project.mapLayers().values():
        try:
            last = max(last, int(layer.customProperty(RUN_PROPERTY, 0) or 0))
        except (TypeError, ValueError):
            pass
    return int(last) + 1


def record_result_run(run: int, project: Optional[QgsProject] = None) -> None:
    """Keep ``run`` in the project entry ``ortholens/result_runs`` when it is the
    highest given so far (see :func:`next_result_run`)."""
    project = project or QgsProject.instance()
    last, _ = project.readNumEntry("ortholens", "result_runs", 0)
    project.writeEntry("ortholens", "result_runs", max(int(last), run))


def result_layer_name(model_id: str, model_version: Optional[str], source_name: str,
                      run: int, when: Optional[_dt.datetime] = None,
                      threshold: Optional[float] = None, batch: bool = False) -> str:
    """The Layers panel name of a result, what tells runs apart first (the panel cuts
    long names at its right edge): ``"#2 thr 0.5 · vienna · pv-unet-efl0 v2.0.0 ·
    14:05"``.

    Args:
        model_id: the model that ran.
        model_version: its card's version (left out when empty).
        source_name: the name of the layer detected in.
        run: the run number (see :func:`next_result_run`).
        when: the local time shown (default: now).
        threshold: the probability threshold it ran with (left out when None).
        batch: a batch job's result (``"batch 14:05"``).
    """
    version = f" v{model_version}" if model_version else ""
    stamp = (when or _dt.datetime.now()).strftime("%H:%M")
    thr = f" thr {threshold:g}" if isinstance(threshold, (int, float)) else ""
    return " · ".join([f"#{run}{thr}", source_name, f"{model_id}{version}",
                       f"batch {stamp}" if batch else stamp])


__all__ = ["RUN_PROPERTY", "safe_name", "default_result_path", "next_result_run",
           "record_result_run", "result_layer_name"]

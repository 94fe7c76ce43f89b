"""Screenshot of QGIS with the Ortholens plugin after a detection (a script, not a test).

One file, two roles:

* **Launcher** (the standard library, ``backend.config`` and ``protocol.framing``), run from
  the repository root (``build.py screenshot``)::

      python3 tools/screenshot.py [--raster RASTER] [--out OUT.png] \\
          [--endpoint tcp://HOST:PORT] [--model MODEL] [--no-detect] \\
          [--timeout 900] [--keep]

  Defaults: ``--raster`` env ``ORTHOLENS_RASTER``, else
  ``<data>/pv01/heldout/PV01_325228_1203845.tif`` (``<data>``: ``backend.config.data_dir``,
  i.e. ``ORTHOLENS_DATA``); ``--out`` env ``ORTHOLENS_SCREENSHOT``, else
  ``out/screenshot.png``; ``--endpoint`` env ``ORTHOLENS_ENDPOINT``; ``--model`` the
  model the dock selects, the daemon's default.

  or from Python::

      from tools.screenshot import take_screenshot
      info = take_screenshot(raster, out_png, endpoint, model)

  It assembles a release-shaped plugin folder in a temporary directory
  (``<tmp>/plugins/ortholens/`` = ``plugin/*`` + ``metadata.txt`` + ``resources/`` +
  ``ext/protocol/``, as in the release zip), a fresh QGIS profile that enables it
  (``[PythonPlugins] ortholens=true``), and runs::

      QGIS_PLUGINPATH=<tmp>/plugins ORTHOLENS_SHOT_INSIDE=1 ORTHOLENS_RASTER=... \\
      ORTHOLENS_SCREENSHOT=OUT.png ORTHOLENS_ENDPOINT=... ORTHOLENS_MODEL=... \\
      ORTHOLENS_REPO=<repo> \\
      xvfb-run -a -s "-screen 0 1280x800x24" qgis --nologo --noversioncheck \\
          --profiles-path <tmp>/profiles --code tools/screenshot.py

  Exit status 0 when the PNG was written (and, unless ``--no-detect``, the detection
  succeeded); the summary (``OUT.json``) is printed.

* **Inside QGIS** (``ORTHOLENS_SHOT_INSIDE=1``, run by ``--code``): opens the raster,
  zooms to it, waits for the plugin's daemon status, selects the model (if one was
  given; else the dock keeps the daemon's default), runs the
  plugin's own *Detect in extent* (a ``QgsTask``; the daemon at ``ORTHOLENS_ENDPOINT``
  is started by the plugin if nothing answers and ``ORTHOLENS_REPO`` holds a backend),
  waits for the task, lets the canvas redraw with the result layer above the raster,
  saves ``iface.mainWindow().grab()`` to ``ORTHOLENS_SCREENSHOT``, writes
  ``<screenshot>.json`` (``{"ok", "error", "features", "layer", "gpkg", "message",
  "seconds"}``) and quits QGIS. Everything is driven by a ``QTimer``; the UI thread is
  never blocked.

Requirements: ``qgis`` (Debian 3.22), ``xvfb-run`` (xvfb + xauth).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

SCREEN = "1280x800x24"
WIDTH, HEIGHT = 1280, 800


# =============================================================================== launcher

def _repo() -> Path:
    """The repository: ``ORTHOLENS_REPO`` (set inside QGIS), else this file's parent's
    parent."""
    env = os.environ.get("ORTHOLENS_REPO")
    if env:
        return Path(env).resolve()
    return Path(__file__).resolve().parents[1]


def qgis_child_env(base=None) -> dict:
    """Environment for a QGIS program (``qgis``, ``qgis_process``) started from Python.

    QGIS's embedded Python finds its home through the first ``python3`` on PATH, so the
    QGIS installation's bin folder (Debian: /usr/bin) goes before pyenv shims and
    virtual environments, and the variables that point Python elsewhere are dropped.
    """
    env = {k: v for k, v in (base if base is not None else os.environ).items()
           if k not in ("PYTHONHOME", "PYTHONPATH", "VIRTUAL_ENV", "PYENV_VERSION")}
    exe = shutil.which("qgis") or shutil.which("qgis_process.bin") or "/usr/bin/qgis"
    qgis_bin = str(Path(exe).resolve().parent)
    env["PATH"] = os.pathsep.join([qgis_bin] + [d for d in env.get("PATH", "").split(os.pathsep)
                                                if d and d != qgis_bin])
    return env


def assemble_plugin(repo: Path, dest_plugins: Path) -> Path:
    """Copy ``plugin/`` + ``metadata.txt`` + ``resources/`` to ``dest_plugins/ortholens``,
    and ``protocol/`` to ``ortholens/ext/protocol`` (the plugin puts ``ext`` on
    ``sys.path``), the layout of the release zip.

    Returns:
        The ``ortholens`` folder.
    """
    dst = dest_plugins / "ortholens"
    if dst.exists():
        shutil.rmtree(dst)
    no_cache = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(repo / "plugin", dst, ignore=no_cache)
    shutil.copytree(repo / "protocol", dst / "ext" / "protocol", ignore=no_cache)
    shutil.copy2(repo / "metadata.txt", dst / "metadata.txt")
    shutil.copytree(repo / "resources", dst / "resources")
    return dst


def write_profile(profiles: Path) -> Path:
    """A fresh QGIS profile (``default``) with the plugin enabled and no first-run noise."""
    ini = profiles / "profiles" / "default" / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True, exist_ok=True)
    ini.write_text(
        "[PythonPlugins]\northolens=true\n\n"
        "[qgis]\ncheckVersion=false\nshowTips=false\nallowVersionCheck=false\n"
        "messageTimeout=60\n\n"
        "[UI]\nUI\\hidePinnedProjects=true\n\n"
        "[app]\nprojections\\unknownCrsBehavior=NoAction\n",
        encoding="utf-8")
    return ini


def run_qgis_code(script: Path, tmp: Path, env_extra: Dict[str, str], timeout_s: float,
                  screen: str = SCREEN) -> Tuple[int, str]:
    """Run ``script`` inside the QGIS desktop under Xvfb with the release-shaped plugin.

    In ``tmp``: the plugin (:func:`assemble_plugin`), a fresh profile
    (:func:`write_profile`) and a private ``XDG_RUNTIME_DIR``; QGIS runs
    ``--code script`` with :func:`qgis_child_env` plus ``QGIS_PLUGINPATH``,
    ``ORTHOLENS_REPO`` (this repository), ``ORTHOLENS_QGIS_STEPS`` (the step runner,
    :mod:`tools.qgis_steps`) and ``env_extra``.

    Args:
        script: the Python file QGIS runs (it drives QGIS with a QTimer and quits).
        tmp: an empty temporary folder (the caller removes it).
        env_extra: further environment variables (the script's own settings).
        timeout_s: kill QGIS after this many seconds.
        screen: the Xvfb screen, ``WIDTHxHEIGHTxDEPTH``.

    Returns:
        ``(returncode, output)``: 124 and what was printed when the time ran out.
    """
    assemble_plugin(_repo(), tmp / "plugins")
    write_profile(tmp / "profiles")
    xdg = tmp / "xdg"
    xdg.mkdir(mode=0o700)
    env = qgis_child_env()
    env.pop("QT_QPA_PLATFORM", None)
    env.update({"QGIS_PLUGINPATH": str(tmp / "plugins"), "ORTHOLENS_REPO": str(_repo()),
                "XDG_RUNTIME_DIR": str(xdg),
                "ORTHOLENS_QGIS_STEPS": str(_repo() / "tools" / "qgis_steps.py")})
    env.update(env_extra)
    return run_qgis(script, tmp / "profiles", env, tmp, timeout_s, screen)


def run_qgis(script: Path, profiles: Path, env: Dict[str, str], cwd: Path,
             timeout_s: float, screen: str = SCREEN) -> Tuple[int, str]:
    """``qgis --code script`` under Xvfb with the profiles of ``profiles``, in the
    environment ``env`` and the folder ``cwd``; killed after ``timeout_s`` seconds.

    Returns:
        ``(returncode, output)``: 124 and what was printed when the time ran out.
    """
    cmd = ["xvfb-run", "-a", "-s", f"-screen 0 {screen}", "qgis", "--nologo",
           "--noversioncheck", "--profiles-path", str(profiles),
           "--code", str(Path(script).resolve())]
    try:
        proc = subprocess.run(cmd, env=env, cwd=str(cwd), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=timeout_s)
        return proc.returncode, proc.stdout.decode("utf-8", "replace")
    except subprocess.TimeoutExpired as exc:
        return 124, (exc.stdout or b"").decode("utf-8", "replace")


def require_qgis() -> None:
    """Raises FileNotFoundError when ``qgis`` or ``xvfb-run`` is not installed."""
    for exe in ("qgis", "xvfb-run"):
        if shutil.which(exe) is None:
            raise FileNotFoundError(f"'{exe}' is not installed (apt-get install qgis xvfb xauth)")


def clean_out(out_dir: str, report: str) -> Path:
    """The folder of a :mod:`tools.qgis_steps` run, resolved and created, without the
    PNGs and the report ``report`` of an earlier run."""
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for old in list(out.glob("*.png")) + [out / report]:
        if old.exists():
            old.unlink()
    return out


def finish_steps(summary: Path, n_steps: int, rc: int, log: str, t0: float,
                 more: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The report of a :mod:`tools.qgis_steps` run (``{"steps": []}`` when QGIS wrote
    none) with ``more`` fields, ``ok`` (all ``n_steps`` steps ran and passed),
    ``returncode``, ``wall_seconds`` since ``t0`` and ``log_tail``; written back to
    ``summary`` and returned."""
    try:
        info = json.loads(summary.read_text("utf-8"))
    except (OSError, ValueError):
        info = {"steps": []}
    info.update(more or {})
    steps = info.get("steps", [])
    info["ok"] = bool(steps) and len(steps) == n_steps and all(s["ok"] for s in steps)
    info["returncode"] = rc
    info["wall_seconds"] = round(time.monotonic() - t0, 1)
    info["log_tail"] = log[-3000:]
    summary.write_text(json.dumps(info, indent=2), encoding="utf-8")
    return info


def default_endpoint() -> str:
    """The daemon's default endpoint (``protocol.framing``'s host and port)."""
    from protocol.framing import DEFAULT_ENDPOINT
    return DEFAULT_ENDPOINT


def take_screenshot(raster: str, out_png: str, endpoint: Optional[str] = None,
                    model: Optional[str] = None, detect: bool = True,
                    timeout_s: float = 900.0, keep: bool = False) -> Dict[str, Any]:
    """Run QGIS under Xvfb, detect with the plugin, and save a PNG of the window.

    Args:
        raster: the orthophoto to open (GeoTIFF path).
        out_png: where to write the screenshot (folders are created).
        endpoint: the daemon's ZeroMQ endpoint (default :func:`default_endpoint`; a
            running daemon is used; if nothing answers, the plugin starts one from this
            repository's backend venv).
        model: model card id to select in the dock (None: the daemon's default model,
            which the dock selects by itself).
        detect: False to take a screenshot of the raster only (no daemon needed).
        timeout_s: kill QGIS after this many seconds.
        keep: keep the temporary plugin/profile folder (its path is in the summary).

    Returns:
        The summary written by the in-QGIS part (``ok``, ``error``, ``features``, ...)
        plus ``png`` (path or None), ``returncode``, ``stderr_tail``, ``tmp``.

    Raises:
        FileNotFoundError: ``raster`` does not exist, or ``qgis``/``xvfb-run`` missing.
    """
    raster_p = Path(raster).resolve()
    if not raster_p.is_file():
        raise FileNotFoundError(f"raster not found: {raster_p}")
    require_qgis()
    out = Path(out_png).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    summary_path = out.with_suffix(".json")
    for p in (out, summary_path):
        if p.exists():
            p.unlink()
    tmp = Path(tempfile.mkdtemp(prefix="ortholens-shot-"))
    try:
        t0 = time.monotonic()
        rc, log = run_qgis_code(Path(__file__), tmp, {
            "ORTHOLENS_SHOT_INSIDE": "1",
            "ORTHOLENS_RASTER": str(raster_p),
            "ORTHOLENS_SCREENSHOT": str(out),
            "ORTHOLENS_ENDPOINT": endpoint or default_endpoint(),
            "ORTHOLENS_MODEL": model or "",
            "ORTHOLENS_SHOT_DETECT": "1" if detect else "0",
            "ORTHOLENS_SHOT_TIMEOUT": str(max(30.0, timeout_s - 30.0)),
        }, timeout_s)
        info: Dict[str, Any] = {}
        if summary_path.is_file():
            try:
                info = json.loads(summary_path.read_text("utf-8"))
            except ValueError:
                info = {}
        info.setdefault("ok", False)
        info.setdefault("error", "QGIS ended without writing a summary")
        info["png"] = str(out) if out.is_file() else None
        info["returncode"] = rc
        info["wall_seconds"] = round(time.monotonic() - t0, 1)
        info["stderr_tail"] = log[-3000:]
        info["tmp"] = str(tmp) if keep else None
        summary_path.write_text(json.dumps(info, indent=2), encoding="utf-8")
        return info
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None) -> int:
    """The launcher's command line (see the module docstring); returns the exit status."""
    if str(_repo()) not in sys.path:  # run as a script: backend is a sibling package
        sys.path.insert(0, str(_repo()))
    from backend.config import data_dir

    data = data_dir()
    ap = argparse.ArgumentParser(description="QGIS + Ortholens screenshot under Xvfb")
    ap.add_argument("--raster", default=os.environ.get(
        "ORTHOLENS_RASTER", str(data / "pv01" / "heldout" / "PV01_325228_1203845.tif")),
        help="orthophoto to open (default: env ORTHOLENS_RASTER, else a pv01 held-out tile)")
    ap.add_argument("--out", default=os.environ.get(
        "ORTHOLENS_SCREENSHOT", str(_repo() / "out" / "screenshot.png")),
        help="PNG to write (default: env ORTHOLENS_SCREENSHOT, else out/screenshot.png)")
    ap.add_argument("--endpoint", default=os.environ.get("ORTHOLENS_ENDPOINT"),
                    help="the daemon's endpoint (default: env ORTHOLENS_ENDPOINT, else "
                         "the protocol's default)")
    ap.add_argument("--model", default=None,
                    help="model id to select (default: the daemon's default model)")
    ap.add_argument("--no-detect", action="store_true", help="screenshot of the raster only")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    a = ap.parse_args(argv)
    info = take_screenshot(a.raster, a.out, a.endpoint, a.model or None,
                           detect=not a.no_detect, timeout_s=a.timeout, keep=a.keep)
    shown = {k: v for k, v in info.items() if k != "stderr_tail"}
    print(json.dumps(shown, indent=2))
    if not info.get("png") or not info.get("ok"):
        print(info.get("stderr_tail", ""), file=sys.stderr)
        return 1
    return 0


# =============================================================================== inside QGIS

def _inside_qgis() -> None:
    """The in-QGIS driver: a QTimer state machine (see the module docstring)."""
    import qgis.utils
    from qgis.PyQt.QtCore import QTimer
    from qgis.core import QgsProject, QgsRasterLayer

    iface = qgis.utils.iface
    env = os.environ
    out = Path(env["ORTHOLENS_SCREENSHOT"])
    want_detect = env.get("ORTHOLENS_SHOT_DETECT", "1") == "1"
    model = env.get("ORTHOLENS_MODEL") or None
    deadline = time.monotonic() + float(env.get("ORTHOLENS_SHOT_TIMEOUT", "840"))
    st: Dict[str, Any] = {"phase": "init", "t0": time.monotonic(), "quiet": 0,
                          "summary": {"ok": False, "error": None, "features": None,
                                      "layer": None, "gpkg": None, "message": None}}
    timer = QTimer()
    timer.setInterval(250)

    def plugin():
        return qgis.utils.plugins.get("ortholens")

    def finish(error: Optional[str] = None) -> None:
        st["phase"] = "shoot"
        if error:
            st["summary"]["error"] = error
        st["quiet"] = 0
        iface.mapCanvas().refreshAllLayers()

    def shoot() -> None:
        timer.stop()
        p = plugin()
        if p is not None and p.dock is not None:
            st["summary"]["message"] = p.dock.detection.message()
        img = iface.mainWindow().grab()
        saved = img.save(str(out), "PNG")
        s = st["summary"]
        s["seconds"] = round(time.monotonic() - st["t0"], 1)
        s["size"] = [img.width(), img.height()]
        if not saved:
            s["ok"], s["error"] = False, f"cannot save {out}"
        elif not want_detect:
            s["ok"] = s["error"] is None
        out.with_suffix(".json").write_text(json.dumps(s, indent=2), encoding="utf-8")
        if p is not None:
            p.stop_started_daemon()  # only a daemon the plugin itself started
        QgsProject.instance().setDirty(False)
        QTimer.singleShot(200, iface.actionExit().trigger)
        QTimer.singleShot(15000, lambda: os._exit(0))  # if exiting hangs

    def tick() -> None:
        try:
            _tick()
        except Exception as exc:  # noqa: BLE001 - still take the picture
            import traceback
            st["summary"]["error"] = f"driver error: {exc!r}\n{traceback.format_exc()}"
            shoot()

    def _tick() -> None:
        phase = st["phase"]
        if time.monotonic() > deadline and phase != "shoot":
            finish(f"timed out in phase {phase}")
            return
        if phase == "init":
            mw = iface.mainWindow()
            mw.setGeometry(0, 0, WIDTH, HEIGHT)
            mw.showNormal()
            layer = QgsRasterLayer(env["ORTHOLENS_RASTER"], Path(env["ORTHOLENS_RASTER"]).stem)
            if not layer.isValid():
                finish(f"cannot open {env['ORTHOLENS_RASTER']}")
                return
            QgsProject.instance().addMapLayer(layer)
            st["raster"] = layer
            iface.setActiveLayer(layer)
            canvas = iface.mapCanvas()
            canvas.setDestinationCrs(layer.crs())
            canvas.setExtent(layer.extent())
            canvas.refresh()
            st["phase_t"] = time.monotonic()
            if want_detect:
                st["phase"] = "status"
            else:
                finish()
            return
        if phase == "status":
            p = plugin()
            if p is None:
                if time.monotonic() - st["phase_t"] > 20:
                    finish("the Ortholens plugin is not loaded (QGIS_PLUGINPATH / profile)")
                return
            if p.status_task is not None and time.monotonic() - st["phase_t"] < 20:
                return
            if p.dock is not None and model:
                idx = p.dock.models.model_combo.findData(model)
                if idx >= 0:
                    p.dock.models.model_combo.setCurrentIndex(idx)
            iface.setActiveLayer(st["raster"])
            iface.mapCanvas().setExtent(st["raster"].extent())
            task = p.detect()
            if task is None:
                finish(p.dock.detection.message() if p.dock is not None else "detect refused")
                return
            st["phase"] = "detect"
            return
        if phase == "detect":
            p = plugin()
            if p.task is not None:
                return
            t = p.last_task
            s = st["summary"]
            if t is None:
                finish("the detection task vanished")
                return
            if t.layer is None:
                finish(t.error or ("cancelled" if t.cancelled else "no result layer"))
                return
            s["ok"] = True
            s["features"] = t.layer.featureCount()
            s["layer"] = t.layer.name()
            s["gpkg"] = t.out_path
            s["stats"] = (t.result or {}).get("stats")
            iface.setActiveLayer(t.layer)
            ext = st["raster"].extent()
            ext.scale(1.08)  # a margin around the raster
            iface.mapCanvas().setExtent(ext)
            finish()
            return
        if phase == "shoot":
            # wait for two quiet ticks of a finished canvas render, then 1 s more
            st["quiet"] = st["quiet"] + 1 if not iface.mapCanvas().isDrawing() else 0
            if st["quiet"] >= 6:
                shoot()

    timer.timeout.connect(tick)
    # keep Python references alive for the life of QGIS
    qgis.utils._ortholens_screenshot = (timer, tick, st)  # type: ignore[attr-defined]
    QTimer.singleShot(1500, timer.start)


if os.environ.get("ORTHOLENS_SHOT_INSIDE") == "1" and "qgis.utils" in sys.modules \
        and getattr(sys.modules["qgis.utils"], "iface", None) is not None:
    _inside_qgis()
elif __name__ == "__main__":
    sys.exit(main())

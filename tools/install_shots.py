"""A QGIS user's install from the plugin zip alone, in the QGIS desktop under Xvfb: one
screenshot per step and the measured figures (a script, not a test: ``build.py
install-shots``).

Launcher (run from the repository root)::

    python3 tools/install_shots.py [--zip ZIP] [--raster RASTER] [--out DIR]
                                   [--timeout 1500] [--keep]

``--zip`` defaults to a fresh ``build.py package`` into the temporary folder; ``--raster``
to the pv01 held-out tile ``PV01_325228_1203845.tif`` (``<data>/pv01/heldout``, ``<data>``
= ``backend.config.data_dir``); ``--out`` to ``out/install``. It extracts the zip into a
fresh QGIS profile's ``python/plugins`` (as *Install from ZIP* does) with the plugin
enabled, gives QGIS a temporary user data folder (``XDG_DATA_HOME``: the engine goes to
``<tmp>/data/ortholens/engine``) and no repository (no ``ORTHOLENS_REPO``), and drives
QGIS with a ``QTimer``:

==  ======================  ==============================================================
01  ``01-no-engine.png``    QGIS with the held-out tile: the dock says no engine is set up
                            and offers *Set up the engine…*
02  ``02-installing.png``   the setup dialog while pip installs (the CPU path: no PyTorch)
03  ``03-installed.png``    the dialog after the self-test
04  ``04-dock.png``         the dock after the setup: engine version, device, models
05  ``05-detect.png``       *Detect in extent* on the tile with the installed engine
==  ======================  ==============================================================

``DIR/install.json`` holds each step (``name``, ``png``, ``ok``, ``note``, ``seconds``) and
the measurements: the zip's and the wheel's size, the setup's time (environment, pip,
self-test: the task's wall time), the disk the engine's environment uses (the sum of its
files' allocated blocks, as ``du``), the packages pip installed, the self-test's
report. The exit status is 0 when every step is ok.

Requirements: ``qgis`` (Debian 3.22), ``xvfb-run`` (xvfb + xauth), a Python >= 3.10 with
``venv``, and pip's package index (or its configured mirror).
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any, Dict

SCREEN = "1440x900x24"
WIDTH, HEIGHT = 1440, 900
#: Step names, in order (the PNG of step i is ``f"{i:02d}-{name}.png"``).
STEPS = ["no-engine", "installing", "installed", "dock", "detect"]


# =============================================================================== launcher

def _repo() -> Path:
    return Path(__file__).resolve().parents[1]


def disk_usage(path: Path) -> int:
    """Bytes ``path`` takes on disk: the sum of its files' allocated blocks (``du``)."""
    total = 0
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            total += getattr(st, "st_blocks", 0) * 512 or st.st_size
    return total


def run_install_shots(zip_path: str, raster: str, out_dir: str,
                      timeout_s: float = 1500.0, keep: bool = False) -> Dict[str, Any]:
    """Install the plugin zip into a fresh profile, set up its engine through the
    plugin under Xvfb, and save the screenshots and ``install.json``.

    Args:
        zip_path: the plugin zip (``build.py package``'s ``ortholens.zip``).
        raster: the orthophoto to detect on.
        out_dir: folder of the PNGs and ``install.json`` (created; old PNGs removed).
        timeout_s: kill QGIS after this many seconds.
        keep: keep the temporary folder (profile, engine).

    Returns:
        ``{"ok", "steps", "measured", "returncode", "wall_seconds", "log_tail"}``.

    Raises:
        FileNotFoundError: the zip, the raster, ``qgis`` or ``xvfb-run`` is missing.
    """
    from tools.common import free_port
    from tools.screenshot import (clean_out, finish_steps, qgis_child_env, require_qgis,
                                  run_qgis, write_profile)

    zip_p, raster_p = Path(zip_path).resolve(), Path(raster).resolve()
    for p in (zip_p, raster_p):
        if not p.is_file():
            raise FileNotFoundError(f"not found: {p}")
    require_qgis()
    out = clean_out(out_dir, "install.json")
    tmp = Path(tempfile.mkdtemp(prefix="ortholens-install-"))
    try:
        profiles = tmp / "profiles"
        write_profile(profiles)
        plugins = profiles / "profiles" / "default" / "python" / "plugins"
        plugins.mkdir(parents=True)
        with zipfile.ZipFile(zip_p) as z:
            z.extractall(plugins)
        wheel = next((plugins / "ortholens" / "engine").glob("*.whl"))
        xdg = tmp / "xdg"
        xdg.mkdir(mode=0o700)
        env = qgis_child_env()
        for var in ("QT_QPA_PLATFORM", "ORTHOLENS_REPO", "ORTHOLENS_PYTHON",
                    "ORTHOLENS_BACKEND_PYTHON", "ORTHOLENS_MODELS", "ORTHOLENS_ENGINE_DIR",
                    "QGIS_PLUGINPATH"):
            env.pop(var, None)
        env.update({
            "ORTHOLENS_INSTALL_INSIDE": "1",
            "ORTHOLENS_RASTER": str(raster_p),
            "ORTHOLENS_INSTALL_OUT": str(out),
            "ORTHOLENS_INSTALL_TIMEOUT": str(max(60.0, timeout_s - 60.0)),
            "ORTHOLENS_ENDPOINT": f"tcp://127.0.0.1:{free_port()}",
            "ORTHOLENS_AUTOSTART": "1",
            "ORTHOLENS_RESULTS": str(tmp / "results"),
            "XDG_DATA_HOME": str(tmp / "data"),
            "XDG_RUNTIME_DIR": str(xdg),
            "ORTHOLENS_QGIS_STEPS": str(Path(__file__).resolve().with_name("qgis_steps.py")),
        })
        t0 = time.monotonic()
        rc, log = run_qgis(Path(__file__), profiles, env, tmp, timeout_s, SCREEN)
        summary = out / "install.json"
        try:
            measured = dict(json.loads(summary.read_text("utf-8")).get("measured") or {})
        except (OSError, ValueError):
            measured = {}
        venv = tmp / "data" / "ortholens" / "engine" / "venv"
        mib = 1 << 20
        measured.update({
            "zip_bytes": zip_p.stat().st_size,
            "zip_mib": round(zip_p.stat().st_size / mib, 1),
            "wheel_bytes": wheel.stat().st_size,
            "wheel_mib": round(wheel.stat().st_size / mib, 1),
            "engine_disk_bytes": disk_usage(venv) if venv.is_dir() else None,
            "engine_disk_mib": round(disk_usage(venv) / mib) if venv.is_dir() else None,
        })
        return finish_steps(summary, len(STEPS), rc, log, t0, {"measured": measured})
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None) -> int:
    """The launcher's command line (see the module docstring); the exit status."""
    repo = _repo()
    if str(repo) not in sys.path:
        sys.path.insert(0, str(repo))
    from backend.config import data_dir

    ap = argparse.ArgumentParser(description="Install from the plugin zip in QGIS, "
                                             "screenshots and figures")
    ap.add_argument("--zip", default=None, help="plugin zip (default: build.py package "
                                                "into the temporary folder)")
    ap.add_argument("--raster", default=str(data_dir() / "pv01" / "heldout"
                                            / "PV01_325228_1203845.tif"))
    ap.add_argument("--out", default=str(repo / "out" / "install"))
    ap.add_argument("--timeout", type=float, default=1500.0, help="seconds")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ortholens-zip-") as dist:
        zip_path = a.zip
        if zip_path is None:
            r = subprocess.run([sys.executable, str(repo / "build.py"), "package", "--out",
                                dist])
            if r.returncode != 0:
                return r.returncode
            zip_path = str(Path(dist) / "ortholens.zip")
        info = run_install_shots(zip_path, a.raster, a.out, a.timeout, a.keep)
    for s in info.get("steps", []):
        print(f"{'ok ' if s['ok'] else 'BAD'} {s['name']:<12} {s['seconds']:7.1f} s  {s['note']}")
    print(json.dumps(info.get("measured", {}), indent=2))
    if not info["ok"]:
        print(info["log_tail"], file=sys.stderr)
        return 1
    return 0


# =============================================================================== inside QGIS

def _inside_qgis() -> None:  # noqa: C901 - one state machine, step by step
    """The in-QGIS driver: each step starts something, waits for its condition, lets the
    canvas settle and grabs the screen."""
    import qgis.utils
    iface = qgis.utils.iface
    env = os.environ
    ns = runpy.run_path(env["ORTHOLENS_QGIS_STEPS"])  # tools/qgis_steps.py
    Step = ns["Step"]

    def plugin():
        return qgis.utils.plugins.get("ortholens")

    measured: Dict[str, Any] = {}
    runner = ns["StepRunner"](iface, plugin, Path(env["ORTHOLENS_INSTALL_OUT"]),
                              "install.json",
                              float(env.get("ORTHOLENS_INSTALL_TIMEOUT", "1400")),
                              lambda: {"measured": measured})
    st, record = runner.st, runner.record

    def s_open_start():
        st["raster"] = ns["open_raster"](iface, env["ORTHOLENS_RASTER"], WIDTH, HEIGHT)

    def s_open_done():
        p = plugin()
        if p is None or p.dock is None or p.status_task is not None:
            return False
        text = p.dock.status.status_label.text()
        record("No detection engine is set up" in text
               and p.dock.status.setup_button.isVisible(),
               f"dock: {text}")
        return True

    def s_installing_start():
        p = plugin()
        p.dock.status.setup_button.click()
        dlg = p.setup_dialog
        dlg.move(200, 80)
        dlg.torch_check.setChecked(False)  # the CPU path
        st["dialog"] = dlg
        st["task"] = dlg.start()
        if st["task"] is None:
            record(False, f"the setup did not start: {dlg.plan_problem}")

    def s_installing_done():
        task = st.get("task")
        if task is None:
            return True
        if st["dialog"].task is None:  # finished before the shot: still record it
            record(task.report is not None, "the setup ended before pip was half way")
            return True
        collected = sum(1 for t in task.lines if t.lstrip().startswith("Collecting"))
        if collected < 8:
            return False
        record(True, f"{collected} packages collected; "
                     f"status: {st['dialog'].status_label.text()[:120]}")
        return True

    def s_installed_start():
        pass

    def s_installed_done():
        dlg, task = st["dialog"], st.get("task")
        if task is None:
            return True
        if dlg.task is not None:
            return False
        if task.report is None:
            record(False, str(task.error or "cancelled"))
            return True
        installed = [t for t in task.lines if t.startswith("Successfully installed")]
        measured.update({
            "setup_seconds": round(task.seconds, 1),
            "plan": task.plan.describe(),
            "packages_installed": len(installed[-1].split()) - 2 if installed else None,
            "self_test": task.report.to_dict(),
        })
        record(True, f"{task.seconds:.0f} s: {task.report.summary()}")
        return True

    def s_dock_start():
        st["dialog"].close()

    def s_dock_done():
        p = plugin()
        if p.status_task is not None or p.dock.models.current_card() is None:
            return False
        card = p.dock.models.current_card()
        text = p.dock.status.status_label.text()
        measured["dock_status"] = text
        record("0.1.0" in text, f"dock: {text}; model {card['id']}")
        return True

    def s_detect_start():
        runner.detect_all_of(st["raster"])

    def s_detect_done():
        t = runner.finished_detection()
        if t is None:
            return False
        record(t.layer is not None, t.summary(full_path=False) if t.layer is not None
               else (t.error or "no result layer"))
        return True

    runner.run([Step("no-engine", s_open_start, s_open_done),
                # the install is caught while pip runs: no waiting for the canvas
                Step("installing", s_installing_start, s_installing_done, settle=False),
                Step("installed", s_installed_start, s_installed_done),
                Step("dock", s_dock_start, s_dock_done),
                Step("detect", s_detect_start, s_detect_done)])
    qgis.utils._ortholens_install_shots = runner  # type: ignore[attr-defined]


if os.environ.get("ORTHOLENS_INSTALL_INSIDE") == "1" and "qgis.utils" in sys.modules \
        and getattr(sys.modules["qgis.utils"], "iface", None) is not None:
    _inside_qgis()
elif __name__ == "__main__":
    sys.exit(main())

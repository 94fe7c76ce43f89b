"""A QGIS user with the plugin zip alone: the plugin sets up its engine.

The end-to-end test starts from a fresh QGIS profile that holds only the extracted
``ortholens.zip`` (built here by ``build.py package``) and no engine; the plugin's own
dialog installs the engine from the packaged wheel into a fresh virtual environment (a
failing offline attempt and a cancelled one first), then *Detect in extent* on a real
held-out tile gives the polygons the repository's engine gives, and ``qgis_process run
ortholens:detect`` works in that profile without ``ORTHOLENS_REPO``. The other tests
cover the pieces: finding a Python and a GPU, the plan, pip's errors, settings that
start an installed engine, pyzmq missing from QGIS's Python, and the plugin
repository's conventions.
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from qgis.PyQt.QtWidgets import QPushButton
from qgis.core import QgsSettings, QgsVectorLayer

from helpers import (BACKEND_PYTHON, PV01_HELDOUT, REPO, free_port, show_layer,
                     start_test_engine, wait_until)

SETTING_KEYS = ("endpoint", "repo", "python", "token", "results_dir", "autostart",
                "precision")


@pytest.fixture
def clean_settings():
    """No Ortholens QGIS settings before and after the test (a fresh profile's)."""
    qs = QgsSettings()
    for k in SETTING_KEYS:
        qs.remove(f"ortholens/{k}")
    yield qs
    for k in SETTING_KEYS:
        qs.remove(f"ortholens/{k}")


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def _pins(text: str) -> dict:
    out = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip().strip('",')
        if "==" in line:
            name, version = line.split("==", 1)
            out[name.strip().lower().replace("_", "-")] = version.strip()
    return out


# ------------------------------------------------------------------- python and GPU

def test_find_python_takes_the_first_that_can_make_a_venv(tmp_path):
    """A Python older than 3.10 and one without ensurepip are passed over, each with a
    reason; the real one is taken; a chosen interpreter is checked as it is."""
    from plugin.install.locate import check_python, find_python

    old = _script(tmp_path / "python-old", "echo 3.9.18\n")
    novenv = _script(tmp_path / "python-novenv", "echo 3.11.2\n")
    assert "needs 3.10 or newer" in check_python(str(old)).problem
    assert "venv or ensurepip" in check_python(str(novenv)).problem
    chosen = find_python(candidates=[str(old), str(novenv), "/usr/bin/python3"])
    assert chosen.ok and chosen.path == "/usr/bin/python3" and chosen.version >= (3, 10, 0)
    assert find_python(str(old)).problem  # a chosen one is not replaced
    none = find_python(candidates=[str(old)])
    assert not none.ok and "needs 3.10" in none.problem and "setup dialog" in none.problem


def test_gpu_is_read_from_nvidia_smi(tmp_path, monkeypatch):
    from plugin.install.locate import detect_gpu

    _script(tmp_path / "nvidia-smi", "echo 'NVIDIA H200, 143771'\n")
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    gpu = detect_gpu()
    assert gpu is not None and gpu.name == "NVIDIA H200" and gpu.memory_mib == 143771
    assert gpu.describe() == "NVIDIA H200 (140 GiB)"
    _script(tmp_path / "nvidia-smi", "echo 'NVIDIA-SMI has failed' >&2; exit 9\n")
    assert detect_gpu() is None
    assert detect_gpu("no-such-nvidia-smi") is None


# --------------------------------------------------------------------------- the plan

def _fake_wheel(tmp_path: Path) -> Path:
    wheel = tmp_path / "engine" / "ortholens_engine-0.1.0-py3-none-any.whl"
    wheel.parent.mkdir(parents=True, exist_ok=True)
    wheel.write_bytes(b"PK")
    return wheel


def test_plan_cpu_gpu_torch_offline(tmp_path):
    """No GPU: the wheel alone (ONNX Runtime); a GPU: the CUDA extra from PyTorch's CUDA
    index; PyTorch asked on a CPU: the train extra from the CPU index; a wheels folder:
    no index at all. Each plan says what and why."""
    from plugin.install.locate import GpuInfo, find_python
    from plugin.install.plan import TORCH_INDEX, make_plan

    py = find_python()
    wheel = _fake_wheel(tmp_path)
    home = tmp_path / "home"
    cpu = make_plan(py, None, home=home, wheel=wheel)
    assert cpu.extra == "" and not cpu.repair
    assert cpu.pip_command()[-1] == str(wheel) and "--extra-index-url" not in cpu.pip_command()
    assert "without PyTorch" in cpu.what() and "no GPU" in cpu.what()
    assert cpu.venv == home / "venv" and cpu.engine_python == home / "venv" / "bin" / "python"
    assert cpu.venv_command() == [py.path, "-m", "venv", str(home / "venv")]
    gpu = make_plan(py, GpuInfo("NVIDIA A10", 23028), home=home, wheel=wheel)
    assert gpu.extra == "cuda" and gpu.pip_command()[-1] == f"{wheel}[cuda]"
    assert TORCH_INDEX["cuda"] in gpu.pip_command() and "NVIDIA A10" in gpu.what()
    # the GPU build of ONNX Runtime replaces the CPU one (they share a package)
    py_e = str(gpu.engine_python)
    assert gpu.gpu_runtime_commands() == [
        [py_e, "-m", "pip", "uninstall", "--yes", "onnxruntime"],
        [py_e, "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
         "onnxruntime-gpu==1.31.1"]]
    assert cpu.gpu_runtime_commands() == []
    train = make_plan(py, None, want_torch=True, home=home, wheel=wheel)
    assert train.extra == "train" and TORCH_INDEX["cpu"] in train.pip_command()
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    off = make_plan(py, None, wheels_dir=str(wheels), home=home, wheel=wheel)
    cmd = off.pip_command()
    assert cmd[cmd.index("--find-links") + 1] == str(wheels) and "--no-index" in cmd
    assert any("offline" in line for line in off.describe())


def test_plan_refuses_without_wheel_python_or_folder(tmp_path):
    from plugin.install.locate import PythonCheck, find_python
    from plugin.install.plan import make_plan
    from protocol.errors import EngineSetupError

    py = find_python()
    with pytest.raises(EngineSetupError, match="carries no engine wheel"):
        make_plan(py, None, home=tmp_path, wheel=tmp_path / "missing.whl")
    bad = PythonCheck("/opt/python2", (2, 7, 18), "/opt/python2 is Python 2.7")
    with pytest.raises(EngineSetupError, match="Python 2.7"):
        make_plan(bad, None, home=tmp_path, wheel=_fake_wheel(tmp_path))
    with pytest.raises(EngineSetupError, match="does not exist"):
        make_plan(py, None, wheels_dir=str(tmp_path / "nope"), home=tmp_path,
                  wheel=_fake_wheel(tmp_path))


PIP_NO_DIST = """\
Processing ./ortholens_engine-0.1.0-py3-none-any.whl
Collecting numpy==2.4.6
  Using cached numpy-2.4.6-cp311-cp311-manylinux_2_27_x86_64.whl (16.6 MB)
ERROR: Could not find a version that satisfies the requirement onnxruntime==1.32.0 (from ortholens-engine) (from versions: none)
ERROR: No matching distribution found for onnxruntime==1.32.0
"""
PIP_BUILD = """\
Collecting rasterio==1.4.4
  Downloading rasterio-1.4.4.tar.gz (442 kB)
  error: subprocess-exited-with-error
  × Building wheel for rasterio (pyproject.toml) did not run successfully.
  ERROR: Failed building wheel for rasterio
ERROR: Could not build wheels for rasterio, which is required to install pyproject.toml-based projects
"""
PIP_NETWORK = """\
WARNING: Retrying (Retry(total=4, connect=None, read=None, redirect=None, status=None)) after connection broken by 'NewConnectionError('<pip._vendor.urllib3.connection.HTTPSConnection object>: Failed to establish a new connection: [Errno -3] Temporary failure in name resolution')': /simple/scipy/
Collecting scipy==1.17.1
ERROR: Could not install packages due to an OSError: HTTPSConnectionPool(host='pypi.org', port=443): Max retries exceeded
"""
PIP_DISK = """\
Collecting onnxruntime==1.32.0
Installing collected packages: onnxruntime
ERROR: Could not install packages due to an OSError: [Errno 28] No space left on device
"""


@pytest.mark.parametrize("output, package, why", [
    (PIP_NO_DIST, "onnxruntime==1.32.0", "no version of it"),
    (PIP_BUILD, "rasterio", "could not be compiled"),
    (PIP_NETWORK, "scipy==1.17.1", "cannot be reached"),
    (PIP_DISK, "onnxruntime==1.32.0", "disk is full"),
])
def test_pip_failure_names_the_package(output, package, why):
    from plugin.install.plan import pip_failure

    got_package, got_why = pip_failure(output.splitlines())
    assert got_package == package and why in got_why


def test_pip_error_message_has_package_command_and_log(tmp_path):
    from plugin.install.locate import find_python
    from plugin.install.plan import make_plan, pip_error

    plan = make_plan(find_python(), None, home=tmp_path / "home", wheel=_fake_wheel(tmp_path))
    err = pip_error(plan, plan.pip_command(), PIP_NO_DIST.splitlines(), 1)
    assert err.code == "setup_failed" and err.package == "onnxruntime==1.32.0"
    assert "pip could not install onnxruntime==1.32.0" in str(err)
    assert err.command in str(err) and "-m pip install" in err.command
    assert str(plan.log_path) in str(err) and err.log_path == str(plan.log_path)


# --------------------------------------------------------------- settings and removal

def _fake_engine_venv(home: Path, version: str = "0.1.0") -> Path:
    venv = home / "venv"
    site = venv / "lib" / "python3.11" / "site-packages"
    (site / f"ortholens_engine-{version}.dist-info").mkdir(parents=True)
    (site / f"ortholens_engine-{version}.dist-info" / "METADATA").write_text("Name: x\n")
    (site / "backend").mkdir()
    (site / "backend" / "__init__.py").write_text("")
    (venv / "bin").mkdir()
    (venv / "bin" / "python").symlink_to("/usr/bin/python3")
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    return venv / "bin" / "python"


def test_an_installed_engine_can_be_started_without_a_repository(tmp_path, monkeypatch,
                                                                clean_settings):
    """No repository and no Python setting: the interpreter of the engine the setup
    installed is used, started in the engine folder; an environment without the engine
    is not startable and says to set it up."""
    from plugin.settings import DaemonSettings, daemon_settings

    for env in ("ORTHOLENS_REPO", "ORTHOLENS_PYTHON", "ORTHOLENS_BACKEND_PYTHON"):
        monkeypatch.delenv(env, raising=False)
    home = tmp_path / "engine"
    monkeypatch.setenv("ORTHOLENS_ENGINE_DIR", str(home))
    import plugin.settings as S
    monkeypatch.setattr(S, "PLUGIN_DIR", tmp_path / "plugins" / "ortholens")
    s = daemon_settings()
    assert s.python is None and not s.can_start() and "Set up the engine" in s.start_hint()
    python = _fake_engine_venv(home)
    s = daemon_settings()
    assert s.python == str(python) and s.repo is None
    assert s.installed_engine() == "0.1.0" and s.can_start() and s.cwd() == str(home)
    bare = DaemonSettings(endpoint="tcp://127.0.0.1:1", python="/usr/bin/python3",
                          repo=None, token=None)
    assert not bare.can_start() and "has no Ortholens engine" in bare.start_hint()


def test_remove_engine_deletes_only_its_files(tmp_path):
    from plugin.install.locate import installed_python
    from plugin.install.task import remove_engine

    home = tmp_path / "engine"
    _fake_engine_venv(home)
    (home / "setup.log").write_text("log")
    (home / "mine.txt").write_text("a user's file")
    assert installed_python(home)
    removed = remove_engine(home)
    assert str(home / "venv") in removed and str(home / "setup.log") in removed
    assert installed_python(home) is None and (home / "mine.txt").is_file()


# ------------------------------------------------------------------------------ pyzmq

@pytest.mark.parametrize("release, command", [
    ({"ID": "debian"}, "sudo apt install python3-zmq"),
    ({"ID": "linuxmint", "ID_LIKE": "ubuntu debian"}, "sudo apt install python3-zmq"),
    ({"ID": "fedora"}, "sudo dnf install python3-zmq"),
    ({"ID": "opensuse-tumbleweed", "ID_LIKE": "opensuse suse"},
     "sudo zypper install python3-pyzmq"),
    ({"ID": "arch"}, "sudo pacman -S python-pyzmq"),
])
def test_pyzmq_fix_command_per_platform(release, command):
    from plugin.install.zmqcheck import fix_command

    assert fix_command(release, "linux") == command
    assert "OSGeo4W Shell" in fix_command({}, "win32")
    mac = fix_command({}, "darwin")
    assert "-m pip install" in mac and "--target" in mac and mac.endswith("pyzmq")


def test_plugin_loads_without_pyzmq_and_says_how_to_install_it(qgis_iface, monkeypatch):
    """With ``import zmq`` failing the plugin still loads; the message bar and the dock
    give the command and an 'Install pyzmq…' button; Detect's status check fails with
    the same advice instead of an exception."""
    import plugin
    from plugin.install.zmqcheck import fix_command

    monkeypatch.setitem(sys.modules, "zmq", None)
    monkeypatch.delitem(sys.modules, "protocol.client", raising=False)
    monkeypatch.delitem(sys.modules, "protocol.connection", raising=False)
    monkeypatch.delitem(sys.modules, "protocol.launcher", raising=False)
    bar = qgis_iface.messageBar()
    bar.clearWidgets()
    p = plugin.classFactory(qgis_iface)
    p.initGui()
    try:
        item = bar.currentItem()
        assert item is not None and "pyzmq" in item.text() and fix_command() in item.text()
        button = item.findChild(QPushButton, "ortholensInstallPyzmq")
        assert button is not None and button.text() == "Install pyzmq…"
        assert wait_until(lambda: p.status_task is None, 60)
        assert "pyzmq" in p.dock.status.status_label.text()
    finally:
        p.unload()
        bar.clearWidgets()


def test_install_pyzmq_with_pip_into_a_site_folder(tmp_path):
    """The consent install runs QGIS's Python's pip with ``--target`` (a user's
    site-packages; Debian refuses ``--user``) and makes the folder importable."""
    from plugin.install.zmqcheck import install_command, install_pyzmq, qgis_python

    target = tmp_path / "site"
    cmd = install_command(target=str(target))
    assert cmd[0] == qgis_python() and cmd[-3:] == ["--target", str(target), "pyzmq"]
    ok, text = install_pyzmq(target=str(target))
    assert ok, text
    assert list(target.glob("pyzmq-*.dist-info")) and (target / "zmq").is_dir()
    assert str(target) in sys.path
    sys.path.remove(str(target))


# ---------------------------------------------------------------- plugin conventions

def test_plugin_repository_conventions():
    """Metadata complete and truthful (the about text says what is installed where),
    LICENSE, changelog, icon; the package version matches; no repository paths in the
    plugin's code; the engine's pins match requirements-backend.txt."""
    cp = configparser.ConfigParser()
    cp.read(REPO / "metadata.txt", encoding="utf-8")
    g = cp["general"]
    about = g["about"]
    for words in ("Set up the engine", "virtual environment", ".local/share/ortholens/engine",
                  "pip", "ONNX Runtime", "nvidia-smi", "python3-zmq", "wheels"):
        assert words in about, words
    assert g["changelog"].startswith(g["version"])
    assert (REPO / "LICENSE").read_text().startswith(
        "                    GNU GENERAL PUBLIC LICENSE")
    assert f"## {g['version']}" in (REPO / "CHANGELOG.md").read_text()
    assert (REPO / g["icon"]).is_file()
    import backend
    assert backend.__version__ == g["version"]
    for path in (REPO / "plugin").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for bad in ("build.py", "/work/", "/home/", "/root/", "shared/data"):
            assert bad not in text, f"{path}: {bad}"
    import tomllib
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pinned = _pins((REPO / "requirements-backend.txt").read_text()
                   + (REPO / "requirements-backend-nodeps.txt").read_text())
    declared = _pins("\n".join(project["dependencies"]
                               + [d for ds in project["optional-dependencies"].values()
                                  for d in ds]))
    assert declared and set(declared) <= set(pinned)
    assert {n: v for n, v in declared.items() if pinned[n] != v} == {}
    assert project["optional-dependencies"]["train"] == project["optional-dependencies"]["cuda"]


# -------------------------------------------------------------------------- end to end

def _qgis_process() -> list:
    for exe in ("qgis_process", "qgis_process.bin"):
        path = shutil.which(exe)
        if path:
            r = subprocess.run([path, "--version"], capture_output=True, text=True,
                               env=dict(os.environ, QT_QPA_PLATFORM="offscreen"))
            if r.returncode == 0 and "not known" not in (r.stdout + r.stderr):
                return [path]
    pytest.fail("no working qgis_process (apt install qgis)")


def _features(path: str) -> list:
    """``[(class, score, area_m2, model, geometry WKB)]`` of a GeoPackage, sorted."""
    vl = QgsVectorLayer(str(path), "x", "ogr")
    assert vl.isValid(), path
    out = sorted((f["class"], round(float(f["score"]), 5), round(float(f["area_m2"]), 3),
                  f["model"], bytes(f.geometry().asWkb())) for f in vl.getFeatures())
    del vl
    return out


def _engine_pids(port: int) -> list:
    """Pids of engines listening on ``port`` that a test started (their command line
    is ``... -m backend --host H --port <port>``)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            args = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"backend" in args and b"--port" in args and str(port).encode() in args:
            pids.append(int(d.name))
    return pids


def test_zip_only_profile_sets_up_its_engine_and_detects_like_the_repository(
        qgis_iface, qgis_new_project, tmp_path, monkeypatch, clean_settings):
    """The clean-profile test (see the module docstring); then a repair and the
    removal through the same dialog."""
    from tools.screenshot import qgis_child_env

    # the zip, as a QGIS user downloads it, extracted into a fresh profile
    dist = tmp_path / "dist"
    r = subprocess.run([sys.executable, str(REPO / "build.py"), "package", "--out",
                        str(dist)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    profile = tmp_path / "cfg" / "profiles" / "default"
    plugins = profile / "python" / "plugins"
    plugins.mkdir(parents=True)
    with zipfile.ZipFile(dist / "ortholens.zip") as z:
        z.extractall(plugins)
    (profile / "QGIS").mkdir()
    (profile / "QGIS" / "QGIS3.ini").write_text("[PythonPlugins]\northolens=true\n")
    wheel = next((plugins / "ortholens" / "engine").glob("ortholens_engine-*.whl"))

    # no repository, no engine; the user's data folder (the engine's home) in tmp
    for env in ("ORTHOLENS_REPO", "ORTHOLENS_PYTHON", "ORTHOLENS_BACKEND_PYTHON",
                "ORTHOLENS_MODELS", "ORTHOLENS_ENGINE_DIR", "ORTHOLENS_TOKEN"):
        monkeypatch.delenv(env, raising=False)
    data_home = tmp_path / "data"
    home = data_home / "ortholens" / "engine"
    monkeypatch.setenv("XDG_DATA_HOME", str(data_home))
    monkeypatch.setenv("ORTHOLENS_ENDPOINT", f"tcp://127.0.0.1:{free_port()}")
    monkeypatch.setenv("ORTHOLENS_AUTOSTART", "1")
    monkeypatch.setenv("ORTHOLENS_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("ORTHOLENS_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.syspath_prepend(str(plugins))
    import ortholens
    assert Path(ortholens.__file__).parent == plugins / "ortholens"
    from ortholens.dock.status import NOT_SET_UP
    from ortholens.install.locate import installed_python
    from ortholens.settings import DaemonSettings, daemon_settings
    assert daemon_settings().repo is None and not daemon_settings().can_start()

    ref_proc = None
    qp_port = free_port()
    p = ortholens.classFactory(qgis_iface)
    p.initGui()
    try:
        assert wait_until(lambda: p.dock.status.status_label.text() == NOT_SET_UP, 15), \
            p.dock.status.status_label.text()
        p.dock.status.setup_button.click()
        dlg = p.setup_dialog
        assert dlg.isVisible() and dlg.start_button.text() == "Set up"
        dlg.torch_check.setChecked(False)  # the CPU path, also on a machine with a GPU
        assert dlg.plan is not None and dlg.plan.extra == "" and dlg.plan.wheel == wheel
        assert dlg.plan.venv == home / "venv"

        # 1. offline with an empty wheels folder: pip fails, the message says on what
        # and how to retry
        empty = tmp_path / "no-wheels"
        empty.mkdir()
        dlg.wheels_edit.setFilePath(str(empty))
        task = dlg.start()
        assert task is not None and wait_until(lambda: dlg.task is None, 180)
        err = task.error
        assert err is not None and err.package, task.lines[-20:]
        assert err.package.split("==")[0].lower() in _pins(
            (REPO / "pyproject.toml").read_text())
        assert "--no-index" in err.command and str(empty) in err.command
        assert err.command in dlg.status_label.text()
        assert "No matching distribution" in (home / "setup.log").read_text()
        assert installed_python() is None

        # 2. cancelled while pip collects: stopped at once, nothing installed
        dlg.wheels_edit.setFilePath("")
        task = dlg.start()
        assert wait_until(lambda: any(t.lstrip().startswith("Collecting")
                                      for t in task.lines), 180), task.lines[-20:]
        dlg.cancel_button.click()
        assert wait_until(lambda: dlg.task is None, 30)
        assert task.cancelled and task.error is None and installed_python() is None
        assert p.dock.status.status_label.text() == NOT_SET_UP

        # 3. the install, through the dialog's button
        dlg.start_button.click()
        task = dlg.task
        assert task is not None and wait_until(lambda: dlg.task is None, 900), \
            task.lines[-30:]
        assert task.report is not None, f"{task.error}\n" + "\n".join(task.lines[-30:])
        assert task.report.models and task.report.version == "0.1.0"
        assert "Self-test: detection on the" in dlg.log_view.toPlainText()
        assert "The engine is set up" in dlg.status_label.text()
        # done: Close comes next; the main button no longer reads "Repair"
        assert dlg.start_button.text() == "Reinstall" and dlg.remove_button.isEnabled()
        assert dlg.close_button.isDefault()
        python = home / "venv" / "bin" / "python"
        assert installed_python() == str(python)
        # installed from the packaged wheel, without PyTorch, outside QGIS's Python
        probe = subprocess.run(
            [str(python), "-c", "import backend, importlib.util, json, sys; print(json.dumps("
             "[backend.__file__, importlib.util.find_spec('torch') is None, sys.prefix]))"],
            capture_output=True, text=True, cwd=str(tmp_path), env={"PATH": "/usr/bin:/bin"})
        backend_file, no_torch, prefix = json.loads(probe.stdout)
        assert backend_file.startswith(str(home / "venv")) and no_torch
        assert prefix == str(home / "venv") and prefix != sys.prefix
        direct = next((home / "venv").glob("lib/python3*/site-packages/"
                                           "ortholens_engine-*.dist-info/direct_url.json"))
        assert json.loads(direct.read_text())["url"] == wheel.as_uri()
        record = json.loads((home / "engine.json").read_text())
        assert record["extra"] == "" and record["self_test"]["models"] == task.report.models

        # 4. the dock: the engine it started from that environment, its device, models
        assert wait_until(lambda: p.status_task is None and p.dock.models.current_card()
                          is not None, 120), p.dock.status.status_label.text()
        status = p.dock.status.status_label.text()
        assert "0.1.0" in status and f"{os.cpu_count()} cores" in status, status
        assert p.daemon_process is not None and p.daemon_process.args[0] == str(python)
        dlg.close()

        # 5. Detect in extent on a real held-out tile
        show_layer(qgis_iface, PV01_HELDOUT, "heldout")
        assert p.detect() is not None
        assert wait_until(lambda: p.task is None and p.last_task is not None, 300)
        mine = p.last_task
        assert mine.layer is not None, mine.error
        got = _features(mine.out_path)
        assert got

        # 6. the repository's engine on the same request gives the same polygons
        ref_endpoint, ref_proc = start_test_engine(tmp_path / "ref.log")
        ref_settings = DaemonSettings(endpoint=ref_endpoint,
                                      python=str(BACKEND_PYTHON), repo=str(REPO),
                                      token=None)
        ref = type(mine)(mine.plan, ref_settings, str(tmp_path / "ref.gpkg"),
                         model_id=mine.model_id, add_to_project=False)
        ok = ref.run()
        ref.finished(ok)
        assert ok, ref.error
        assert _features(ref.out_path) == got

        # 7. qgis_process in that profile, no ORTHOLENS_REPO: it starts the installed
        # engine itself (on a port of its own) and detects
        env = qgis_child_env()
        for var in ("ORTHOLENS_REPO", "ORTHOLENS_PYTHON", "ORTHOLENS_BACKEND_PYTHON",
                    "QGIS_PLUGINPATH", "ORTHOLENS_AUTOSTART"):
            env.pop(var, None)
        env.update(QGIS_CUSTOM_CONFIG_PATH=str(tmp_path / "cfg"), QT_QPA_PLATFORM="offscreen",
                   ORTHOLENS_ENDPOINT=f"tcp://127.0.0.1:{qp_port}")
        out = tmp_path / "qgis_process.gpkg"
        r = subprocess.run(_qgis_process() + ["--json", "run", "ortholens:detect",
                                              f"--INPUT={PV01_HELDOUT}", f"--OUTPUT={out}"],
                           capture_output=True, text=True, env=env, timeout=600,
                           cwd=str(tmp_path))
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        results = json.loads(r.stdout[r.stdout.index("{"):])["results"]
        assert results["COUNT"] == len(got)
        assert _features(str(out)) == got  # the batch path: the same polygons
        started = (tmp_path / "logs" / f"daemon-{qp_port}.log").read_text()
        assert f"listening on tcp://127.0.0.1:{qp_port}" in started, started[-2000:]
        for pid in _engine_pids(qp_port):
            os.kill(pid, 15)

        # 8. set up again: a repair (the engine reinstalled over itself); then removed
        dlg.show()
        assert dlg.start_button.text() == "Reinstall" and dlg.plan.repair
        dlg.start_button.click()
        task = dlg.task
        assert task is not None and wait_until(lambda: dlg.task is None, 600)
        assert task.report is not None, f"{task.error}\n" + "\n".join(task.lines[-30:])
        assert any("--force-reinstall" in t for t in task.lines)
        assert wait_until(lambda: p.status_task is None and p.dock.models.current_card()
                          is not None, 120), p.dock.status.status_label.text()
        dlg.confirm = False
        assert dlg.remove() and installed_python() is None
        assert not (home / "venv").exists() and p.daemon_process is None
        assert wait_until(lambda: p.status_task is None
                          and p.dock.status.status_label.text() == NOT_SET_UP, 30), \
            p.dock.status.status_label.text()
    finally:
        p.unload()
        if ref_proc is not None and ref_proc.poll() is None:
            ref_proc.terminate()
            ref_proc.wait(20)
        for pid in _engine_pids(qp_port):  # the engine qgis_process started
            os.kill(pid, 15)
        shutil.rmtree(home, ignore_errors=True)  # ~600 MB: not kept in tmp


def test_status_line_is_cut_between_words_never_mid_name():
    """The setup dialog's status line: a long package list is shown by whole names with
    the count, not cut in a name ("rasterio, o")."""
    from plugin.install.dialog import status_line
    names = ["numpy", "rasterio", "onnxruntime", "pyzmq", "shapely", "affine"] * 6
    line = status_line("Installing collected packages: " + ", ".join(names))
    assert len(line) <= 150 and line.endswith(f", … ({len(names)} in all)")
    shown = line[len("Installing collected packages: "):].split(", … (")[0].split(", ")
    assert shown == names[:len(shown)] and len(shown) >= 5
    assert status_line("Collecting rasterio==1.4.4") == "Collecting rasterio==1.4.4"
    long = "$ " + " ".join(["--find-links /very/long/path/wheels"] * 8)
    assert status_line(long).endswith(" …") and len(status_line(long)) <= 152

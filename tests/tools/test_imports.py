"""The import rules of ``tools.imports`` hold for the code base, and the checker finds
each kind of violation in a small synthetic tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.imports import violations
from tests.support import REPO


def test_code_base_follows_the_import_rules():
    found = violations(REPO)
    assert found == [], "\n".join(found)


def _tree(root: Path, files: dict) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    for pkg in ("protocol", "plugin", "backend", "tools"):
        (root / pkg).mkdir(exist_ok=True)
        (root / pkg / "__init__.py").touch()
    return root


CLEAN = {
    "protocol/framing.py": "import json\nimport numpy\n",
    "protocol/client.py": "import zmq\nfrom . import framing\n",
    "plugin/main.py": "from qgis.core import QgsProject\nfrom protocol import framing\nfrom . import dock\n",
    "plugin/dock.py": "from .main import x  # noqa\n" if False else "import os\n",
    "backend/config.py": "import os\n",
    "backend/models/__init__.py": "",
    "backend/models/card.py": "from backend.config import x\nimport protocol\n",
    "backend/inference/__init__.py": "",
    "backend/inference/detect.py": "from backend.models.card import ModelCard\n",
    "backend/daemon/__init__.py": "",
    "backend/daemon/server.py": "def f():\n    from backend.inference import detect\n",
    "tools/bench.py": "from backend.daemon import server\nfrom plugin import main\n",
}


def test_checker_passes_a_clean_tree(tmp_path):
    assert violations(_tree(tmp_path, CLEAN)) == []


@pytest.mark.parametrize("rel, text, expected", [
    ("backend/inference/loop.py", "from backend.inference import detect\n",
     None),  # legal on its own; the cycle case below adds the way back
    ("backend/models/bad.py", "def f():\n    from backend.daemon import server\n",
     "a higher layer"),
    ("backend/inference/qt.py", "from qgis.core import QgsProject\n", "(QGIS/Qt)"),
    ("protocol/qt.py", "import qgis\n", "(QGIS/Qt)"),
    ("protocol/heavy.py", "import torch\n", "neither the standard library"),
    ("plugin/engine.py", "from backend.models import card\n", "plugin module plugin.engine"),
    ("plugin/torchy.py", "import torch\n", "plugin module plugin.torchy imports torch"),
    ("backend/daemon/uses_tools.py", "from tools import bench\n", "from tools/"),
    ("protocol/uses_plugin.py", "from plugin import main\n", "imports the plugin"),
    ("backend/ghost.py", "from backend import nothing_here\n", None),
])
def test_checker_reports_each_kind_of_violation(tmp_path, rel, text, expected):
    found = violations(_tree(tmp_path, dict(CLEAN, **{rel: text})))
    if expected is None:
        assert found == []
    else:
        assert len(found) == 1 and expected in found[0], found


def test_checker_reports_cycles_through_lazy_imports(tmp_path):
    files = dict(CLEAN)
    files["backend/inference/detect.py"] += "def g():\n    from backend.inference import batch\n"
    files["backend/inference/batch.py"] = "from backend.inference.detect import run\n"
    found = violations(_tree(tmp_path, files))
    assert found == ["import cycle: backend.inference.batch -> backend.inference.detect "
                     "-> backend.inference.batch"]


def test_checker_reports_a_relative_import_of_a_missing_module(tmp_path):
    found = violations(_tree(tmp_path, dict(CLEAN, **{"plugin/x.py": "from .nothere import y\n"})))
    assert len(found) == 1 and "plugin.nothere, which does not exist" in found[0]

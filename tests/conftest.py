"""Shared by the protocol, backend and tools tests: the repository root on ``sys.path``
(the plugin's tests have their own root, ``tests/plugin``)."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

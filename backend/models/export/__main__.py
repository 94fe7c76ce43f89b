"""``python -m backend.models.export [MODEL_ID ...]``: export models to ONNX.

Without ids it exports every model of the catalog whose ``model.onnx`` is missing,
older than its weights, or without Deepness metadata (``build.py setup`` runs it). It lives apart from
:func:`~backend.models.export.export_onnx` because it needs the catalog, which needs the
version store, which needs the exporter.
"""

from __future__ import annotations

import sys
from typing import List, Optional

from backend.models.catalog import list_cards, load_card
from backend.models.card import ModelCard
from backend.models.deepness import has_metadata
from backend.models.export import export_onnx


def stale(card: ModelCard) -> bool:
    """True when ``card`` has weights and its ONNX file is missing, older, or without
    Deepness metadata (an export made before it had them)."""
    return card.weights_path.is_file() and (
        not card.onnx_path.is_file()
        or card.onnx_path.stat().st_mtime < card.weights_path.stat().st_mtime
        or not has_metadata(card.onnx_path))


def main(argv: Optional[List[str]] = None) -> int:
    """Export the named models (default: the stale ones); returns the exit status.

    Raises:
        ModelNotFound, ModelCorrupt: a named model is missing or unreadable.
        RuntimeError: an export disagrees with PyTorch.
    """
    argv = sys.argv[1:] if argv is None else argv
    cards = [load_card(a) for a in argv] if argv else [
        c for c in list_cards() if stale(c)]
    for c in cards:
        export_onnx(c)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Models imported from ONNX files (bring your own model): the store, and the import.

An import (:func:`import_onnx`, the daemon's ``import_model`` request) reads a
Deepness-format ONNX file (:mod:`backend.models.deepness`), checks that its graph runs
as a segmenter on one tile, and stores it in the user model folder
(:func:`backend.models.versions.user_models_dir`)::

    <root>/imported/<id>/card.json   the generated card (``format`` "deepness")
    <root>/imported/<id>/model.onnx  the file, copied as it was

:func:`backend.models.catalog.load_card` and ``list_cards`` find these models like the
shipped ones, the detection and batch pipelines run them through
``backend.inference.predictors.ImportedPredictor``, and an ensemble card written into
``<root>/imported/<id>/`` may name them as members. They have no PyTorch weights: they
cannot be retrained.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import List, Optional

import numpy as np

import protocol as P
from backend.config import models_dir
from backend.models.card import ModelCard, card_path, read_card, write_card
from backend.models.deepness import (ORTHOLENS_KEY, Graph, card_dict, file_error,
                                     merged_metadata)
from backend.models.outputs import ImportInfo
from backend.models.versions import now_iso, user_models_dir
from protocol.errors import ModelCorrupt, ModelNotFound
from protocol.importing import ImportValues

#: The sub-folder of the user model folder that holds the imported models.
IMPORTED = "imported"


def imported_dir(root: Optional[Path] = None) -> Path:
    """``<root>/imported`` (``root`` default: the user model folder); not created."""
    return (Path(root) if root else user_models_dir()) / IMPORTED


def list_imported_cards(root: Optional[Path] = None) -> List[ModelCard]:
    """The readable cards under :func:`imported_dir`, sorted by id; broken ones are
    skipped, like broken shipped cards."""
    cards = []
    for p in sorted(imported_dir(root).glob("*/card.json")):
        try:
            cards.append(read_card(p))
        except ModelCorrupt:
            continue
    return cards


def load_imported_card(model_id: str, root: Optional[Path] = None) -> Optional[ModelCard]:
    """The card of imported model ``model_id``, or None when there is none.

    Raises:
        ModelNotFound: ``model_id`` is not a plain folder name.
        ModelCorrupt: its card cannot be read.
    """
    path = card_path(imported_dir(root), model_id)
    return read_card(path) if path.is_file() else None


def open_session(path: Path):
    """An ONNX Runtime session of the file at ``path`` on the CPU.

    Raises:
        ModelCorrupt: ONNX Runtime cannot load it (``field`` ``"path"``).
    """
    import onnxruntime as ort
    try:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises several types
        raise file_error(f"{path.name} is not an ONNX model ONNX Runtime can load: "
                         f"{exc}") from None


def _dim(d) -> Optional[int]:
    return d if isinstance(d, int) and d > 0 else None


def inspect_graph(session) -> Graph:
    """The input, outputs (channel counts 0: :func:`probe` measures them) and metadata
    of a session's graph.

    Raises:
        ModelCorrupt: not one float image input ``(N, 3, H, W)``.
    """
    inputs = session.get_inputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 4 or inputs[0].type != "tensor(float)":
        shown = [(i.name, i.shape, i.type) for i in inputs]
        raise file_error(f"the graph must take one float32 image (N, 3, H, W); it takes "
                         f"{shown}")
    n, c, h, w = (_dim(d) for d in inputs[0].shape)
    if c not in (None, 3):
        raise file_error(f"the graph takes {c} input channels; Ortholens feeds R, G, B "
                         f"(an alpha band is the valid-data mask, never a model input)")
    outputs = tuple((o.name, 0) for o in session.get_outputs())
    meta = dict(session.get_modelmeta().custom_metadata_map)
    return Graph(inputs[0].name, (h, w) if h and w else None, c, n, outputs, meta)


def probe(session, graph: Graph, tile: int) -> Graph:
    """Run the graph once on a zero tile of ``tile`` pixels; the graph with the output
    channel counts it produced.

    Raises:
        ModelCorrupt: it fails, or an output is not a per-pixel map of the tile
            (``(N, C, tile, tile)`` or ``(N, tile, tile)``).
    """
    x = np.zeros((graph.fixed_batch or 1, 3, tile, tile), np.float32)
    try:
        outs = session.run(None, {graph.input_name: x})
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime's errors
        raise file_error(f"the graph does not run on a {tile} x {tile} pixel tile: "
                         f"{exc}") from None
    channels = []
    for (name, _), y in zip(graph.outputs, outs):
        y = np.asarray(y)
        if y.ndim not in (3, 4) or y.shape[-2:] != (tile, tile):
            raise file_error(f"output {name!r} has shape {list(y.shape)}, not a map of the "
                             f"{tile} x {tile} tile: Ortholens runs segmentation models")
        channels.append((name, 1 if y.ndim == 3 else int(y.shape[1])))
    return Graph(graph.input_name, graph.input_hw, graph.input_channels,
                 graph.fixed_batch, tuple(channels), graph.metadata)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def new_model_id(wanted: str, root: Optional[Path] = None) -> str:
    """``wanted`` made a valid id (letters, digits, ``.``, ``_``, ``-``) that no shipped
    or imported model has (``-2``, ``-3``, ... appended)."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", wanted).strip(".-")[:56] or "model"
    mid, n = base, 1
    while _taken(mid, root):
        n += 1
        mid = f"{base}-{n}"
    return mid


def _taken(model_id: str, root: Optional[Path]) -> bool:
    return (card_path(models_dir(), model_id).exists()
            or (imported_dir(root) / model_id).exists())


def import_onnx(path: str, values: Optional[ImportValues] = None,
                model_id: Optional[str] = None, root: Optional[Path] = None) -> ModelCard:
    """Import the Deepness-format ONNX file at ``path`` as a new model.

    Args:
        path: the ``.onnx`` file (on this computer).
        values: values for metadata the file lacks or that replace the file's.
        model_id: the new id; None: the id an Ortholens export records, else the
            file's name, made unique (:func:`new_model_id`).
        root: the user model folder (default :func:`user_models_dir`).

    Returns:
        The new model's card, read back from its folder; without ``model_id``, the
        card of the model imported before from the same file (SHA-256) with the same
        ``values``, when there is one.

    Raises:
        ModelNotFound: no such file (``field`` ``"path"``).
        ModelCorrupt: a file ONNX Runtime cannot load or that is no segmenter, an
            unsupported ``model_type``, a metadata value out of range (``field``
            ``"path"``); needed metadata missing (``field`` ``"values"``); ``model_id``
            taken (``field`` ``"model"``).
    """
    src = Path(path)
    if not src.is_file():
        raise ModelNotFound(f"no ONNX file {path} on the engine's computer", field="path")
    session = open_session(src)
    graph = inspect_graph(session)
    meta = merged_metadata(graph, values, src.name)
    graph = probe(session, graph, int(meta["tiles_size"]))
    if model_id is not None and _taken(model_id, root):
        raise ModelCorrupt(f"a model {model_id!r} exists already: choose another id",
                           P.E_INVALID_INPUT, field="model")
    sha = _sha256(src)
    given = values.to_wire() if values is not None else {}
    same = next((c for c in list_imported_cards(root) if c.imported is not None
                 and c.imported.sha256 == sha and c.imported.values == given), None)
    if model_id is None and same is not None:
        return same
    extra = meta.get(ORTHOLENS_KEY) if isinstance(meta.get(ORTHOLENS_KEY), dict) else {}
    mid = model_id or new_model_id(str(extra.get("model") or src.stem), root)
    card = card_dict(graph, meta, mid, f"1.0.0+{sha[:8]}")
    card["imported"] = ImportInfo(format="deepness", file=src.name, sha256=sha,
                                  imported=now_iso(), metadata=dict(graph.metadata),
                                  values=given).to_dict()
    return _store(src, card, root)


def _store(src: Path, card: dict, root: Optional[Path]) -> ModelCard:
    """Write the model's folder (the copied file and the card) under a temporary name,
    then rename it into place, so a listing never sees half a model."""
    folder = imported_dir(root)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        shutil.copyfile(src, tmp / "model.onnx")
        write_card(ModelCard.from_dict(card, tmp), tmp / "card.json")
        os.replace(tmp, folder / card["id"])
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return read_card(folder / card["id"] / "card.json")


__all__ = ["IMPORTED", "imported_dir", "list_imported_cards", "load_imported_card",
           "open_session", "inspect_graph", "probe", "new_model_id", "import_onnx"]

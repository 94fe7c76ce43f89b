"""Deepness's ONNX model format: its metadata read into an Ortholens model card, and
written into the ONNX files Ortholens exports.

Deepness (the QGIS plugin that runs ONNX models on orthophotos;
PUTvision/qgis-plugin-deepness, Apache License 2.0) keeps a model's description in the
ONNX file's ``metadata_props``, each value a JSON string. What Ortholens reads
(``docs/byom.md`` has the table):

===================================  ==================================================
``model_type``                       ``Segmentor`` (others are refused)
``class_names``                      ``{"0": name, ...}`` per output (a list for several):
                                     softmax channel 0 is the background, a sigmoid's
                                     channel 0 its one class; absent: ``class <id>``
``resolution``                       cm per pixel -> ``gsd_m`` = resolution / 100
``tiles_size``                       tile side, pixels -> ``tile_size`` (a graph with a
                                     fixed input size gives it)
``tiles_overlap``                    percent of the tile -> ``overlap`` pixels
``standardization_mean`` / ``_std``  after scaling to 0-1 -> ``normalize`` (absent: 0
                                     and 1, the inputs stay 0-1)
``seg_thresh``                       -> ``threshold``
``seg_small_segment``                pixels ("remove small occurrences of the class",
                                     Deepness's documentation); Ortholens drops objects
                                     smaller than a square of that side:
                                     ``min_area_m2`` = (seg_small_segment x GSD)^2
===================================  ==================================================

The metadata is read with ONNX Runtime (which a detection-only engine has), and written
with the ``onnx`` package (which exporting needs anyway). An Ortholens export adds the
key :data:`ORTHOLENS_KEY` for what Deepness's keys cannot say (version, colours, exact
minimum area, hole filling, simplification), so that a round trip gives the same card.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import protocol as P
from backend.models.card import ModelCard
from protocol.errors import ModelCorrupt
from protocol.importing import MODEL_TYPES, ImportValues, missing_message

#: The metadata keys an import needs: asked for when missing.
NEEDED = ("model_type", "resolution", "tiles_size", "tiles_overlap", "seg_thresh",
          "seg_small_segment")
#: The key of an Ortholens export's own values (JSON object).
ORTHOLENS_KEY = "ortholens"
#: The card fields :data:`ORTHOLENS_KEY` carries, which Deepness's keys cannot say.
ORTHOLENS_FIELDS = ("version", "min_area_m2", "max_hole_m2", "simplify_m", "orthogonalize",
                    "min_solidity", "min_score", "gsd_range_m")
#: Pixel values are scaled by this to 0-1 before standardisation (8-bit input).
SCALE = 255.0
#: The colours imported classes get, in class order (Tableau 10, matplotlib's ``tab10``).
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")


@dataclass(frozen=True)
class Graph:
    """What an import needs to know of an ONNX graph.

    Attributes:
        input_name: the name of its (first) input.
        input_hw: the input's fixed height and width, pixels, or None when dynamic.
        input_channels: the input's channel count (None: dynamic).
        fixed_batch: the input's batch size when fixed (1: one tile a call), else None.
        outputs: per output, its name and channel count (3-d outputs count 1).
        metadata: ``metadata_props``, key -> value string.
    """

    input_name: str
    input_hw: Optional[Tuple[int, int]]
    input_channels: Optional[int]
    fixed_batch: Optional[int]
    outputs: Tuple[Tuple[str, int], ...]
    metadata: Dict[str, str]


def _decoded(metadata: Mapping[str, str]) -> Dict[str, Any]:
    """Each metadata value JSON-decoded (a value that is not JSON stays a string)."""
    out: Dict[str, Any] = {}
    for k, v in metadata.items():
        try:
            out[k] = json.loads(v)
        except (TypeError, ValueError):
            out[k] = v
    return out


def file_error(message: str) -> ModelCorrupt:
    """An ``invalid_input`` error about the imported file (``field`` ``"path"``)."""
    return ModelCorrupt(message, P.E_INVALID_INPUT, field="path")


def _number(meta: Mapping[str, Any], key: str, lo: float, hi: float,
            integer: bool = False) -> float:
    """``meta[key]``, a number in ``[lo, hi]`` (an integer when ``integer``).

    Raises:
        ModelCorrupt: anything else, naming the key.
    """
    v = meta[key]
    ok = (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
          and lo <= v <= hi and (not integer or float(v).is_integer()))
    if not ok:
        kind = "an integer" if integer else "a number"
        raise file_error(f"metadata '{key}' must be {kind} in [{lo:g}, {hi:g}], not {v!r}")
    return float(v)


def _triple(meta: Mapping[str, Any], key: str, default: float) -> List[float]:
    """``meta[key]`` as three numbers (R, G, B): a list of 3 (or 4: RGBA, alpha dropped),
    or one number for all; ``default`` for each when absent.

    Raises:
        ModelCorrupt: anything else, naming the key.
    """
    v = meta.get(key)
    if v is None:
        return [default] * 3
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        v = [v] * 3
    if (not isinstance(v, list) or len(v) not in (3, 4)
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                       and math.isfinite(x) for x in v)):
        raise file_error(f"metadata '{key}' must be three numbers (R, G, B), not {v!r}")
    return [float(x) for x in v[:3]]


def check_type(meta: Mapping[str, Any]) -> None:
    """Refuse every model type but ``Segmentor`` (an absent type passes: it is asked).

    Raises:
        ModelCorrupt: another Deepness type, or an unknown one.
    """
    kind = meta.get("model_type")
    if kind is None or kind == "Segmentor":
        return
    if kind in MODEL_TYPES:
        raise file_error(f"the model is a Deepness {kind}: Ortholens runs segmentation "
                         f"models (model_type Segmentor) only")
    raise file_error(f"unknown model_type {kind!r} (Deepness's types: "
                     f"{', '.join(MODEL_TYPES)}; Ortholens runs Segmentor models)")


def merged_metadata(graph: Graph, values: Optional[ImportValues], file_name: str
                    ) -> Dict[str, Any]:
    """The file's decoded metadata with ``values`` on top (but for a ``model_type`` the
    file has), and ``tiles_size`` from a fixed input size when the file gives none.

    Args:
        graph: the graph and its metadata.
        values: the request's values (None: none).
        file_name: the file's name, for the message of missing keys.

    Raises:
        ModelCorrupt: an unsupported ``model_type``; a ``tiles_size`` other than the
            graph's fixed input size; needed keys missing (``field`` ``"values"``, the
            message :func:`protocol.importing.missing_message`).
    """
    meta = _decoded(graph.metadata)
    check_type(meta)  # a file's own type is never replaced: a Detector stays one
    meta.update({k: v for k, v in (values.to_wire() if values is not None else {}).items()
                 if not (k == "model_type" and meta.get(k) is not None)})
    check_type(meta)
    if graph.input_hw is not None:
        h, w = graph.input_hw
        if h != w:
            raise file_error(f"the graph takes {h} x {w} pixel inputs; Ortholens runs "
                             f"square tiles")
        if meta.get("tiles_size") not in (None, h):
            raise file_error(f"metadata 'tiles_size' is {meta['tiles_size']!r} but the "
                             f"graph takes {h} x {w} pixel inputs")
        meta["tiles_size"] = h
    missing = [k for k in NEEDED if meta.get(k) is None]
    if missing:
        raise ModelCorrupt(missing_message(missing, file_name),
                           P.E_INVALID_INPUT, field="values")
    return meta


def classes_and_outputs(class_names: Any, channels: Sequence[int]
                        ) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    """The card's ``classes`` (coloured from :data:`PALETTE`) and ``outputs`` of a graph
    whose outputs have these channel counts (see :mod:`backend.models.outputs` for the
    numbering).

    Args:
        class_names: Deepness's ``class_names``: one ``{"<channel>": name}`` dict, or a
            list of one per output, or None (names ``class <id>``).
        channels: each output's channel count: 1 is a sigmoid output (one class),
            more a softmax output (channel 0 the background).

    Raises:
        ModelCorrupt: ``class_names`` that is not such a dict or list, or a list of
            another length than the outputs.
    """
    names = class_names if isinstance(class_names, list) else (
        [class_names] if class_names is not None else [{}] * len(channels))
    if len(names) != len(channels) or not all(isinstance(n, dict) for n in names):
        raise file_error(f"metadata 'class_names' must be one {{channel: name}} object "
                         f"per output ({len(channels)}), not {class_names!r}")
    classes: List[Dict[str, Any]] = []
    outputs: List[Dict[str, Any]] = []
    taken = set()
    for index, (n, family) in enumerate(zip(channels, names)):
        first = 0 if n == 1 else 1
        ids = []
        for ch in range(first, n):
            cid = len(classes) + 1
            name = str(family.get(str(ch), family.get(ch, f"class {cid}")))
            if name in taken:  # the same name in two outputs: tell them apart
                name = f"{name} (output {index})"
            taken.add(name)
            classes.append({"id": cid, "name": name,
                            "color": PALETTE[(cid - 1) % len(PALETTE)]})
            ids.append(cid)
        outputs.append({"index": index, "activation": "sigmoid" if n == 1 else "softmax",
                        "classes": ids})
    return classes, outputs


def card_dict(graph: Graph, meta: Mapping[str, Any], model_id: str, version: str
              ) -> Dict[str, Any]:
    """The card of an imported model (``format`` ``"deepness"``).

    Args:
        graph: the graph (:func:`backend.models.imported.inspect_graph`).
        meta: :func:`merged_metadata`.
        model_id, version: the new model's id and version.

    Raises:
        ModelCorrupt: a metadata value out of range or of the wrong type (the message
            names the key).
    """
    gsd_m = _number(meta, "resolution", 0.01, 1e5) / 100.0
    tile = int(_number(meta, "tiles_size", 32, 8192, integer=True))
    overlap = int(round(tile * _number(meta, "tiles_overlap", 0.0, 90.0) / 100.0))
    small = _number(meta, "seg_small_segment", 0, 1e4, integer=True)
    mean, std = (_triple(meta, "standardization_mean", 0.0),
                 _triple(meta, "standardization_std", 1.0))
    if not all(s > 0 for s in std):
        raise file_error(f"metadata 'standardization_std' must be positive, not {std}")
    classes, outputs = classes_and_outputs(meta.get("class_names"),
                                           [c for _, c in graph.outputs])
    card = {"id": model_id, "version": version, "format": "deepness",
            "classes": classes, "outputs": outputs,
            "bands": 3, "band_names": ["red", "green", "blue"], "dtype": "uint8",
            "normalize": {"scale": SCALE, "mean": mean, "std": std},
            "gsd_m": gsd_m, "tile_size": tile, "overlap": overlap,
            "threshold": _number(meta, "seg_thresh", 1e-6, 1.0),
            "min_area_m2": round((small * gsd_m) ** 2, 9), "max_hole_m2": 0.0,
            "simplify_m": 0.0,
            "orthogonalize": False, "min_solidity": 0.0, "min_score": 0.0,
            "onnx": "model.onnx"}
    return _with_ortholens(card, meta.get(ORTHOLENS_KEY))


def _with_ortholens(card: Dict[str, Any], extra: Any) -> Dict[str, Any]:
    """``card`` with an Ortholens export's own values (:data:`ORTHOLENS_FIELDS` and the
    class colours) when the file has them."""
    if not isinstance(extra, dict):
        return card
    out = dict(card)
    out.update({k: extra[k] for k in ORTHOLENS_FIELDS if extra.get(k) is not None})
    colors = extra.get("colors") or {}
    if isinstance(colors, dict):
        out["classes"] = [dict(c, color=colors[c["name"]]) if c["name"] in colors else c
                          for c in card["classes"]]
    return out


# ----------------------------------------------------------------------------- export

def deepness_metadata(card: ModelCard) -> Dict[str, str]:
    """The Deepness metadata of a model Ortholens exports (one softmax output,
    ``probabilities``: channel 0 background, channel k class k), values as JSON
    strings.

    The card's normalisation ``(x / scale - mean) / std`` is rewritten for inputs
    scaled by 255, as Deepness scales them; ``seg_small_segment`` is the side of the
    square of ``min_area_m2``, in pixels at the card's GSD.
    """
    n = card.normalize
    f = float(n.scale) / SCALE
    overlap = 100.0 * card.overlap / card.tile_size
    names = {"0": "background", **{str(c.id): c.name for c in card.classes}}
    meta = {"model_type": "Segmentor", "class_names": [names],
            "resolution": round(card.gsd_m * 100.0, 6), "tiles_size": card.tile_size,
            "tiles_overlap": int(overlap) if float(overlap).is_integer() else overlap,
            "standardization_mean": [m / f for m in n.mean],
            "standardization_std": [s / f for s in n.std],
            "seg_thresh": card.threshold,
            "seg_small_segment": int(round(math.sqrt(card.min_area_m2) / card.gsd_m)),
            ORTHOLENS_KEY: {"model": card.id,
                            **{k: getattr(card, k) for k in ORTHOLENS_FIELDS
                               if getattr(card, k) is not None},
                            "colors": {c.name: c.color for c in card.classes if c.color}}}
    return {k: json.dumps(v) for k, v in meta.items()}


def write_metadata(onnx_path: Path, metadata: Mapping[str, str]) -> None:
    """Set ``metadata`` in the ONNX file at ``onnx_path`` (replacing keys of the same
    name, keeping the others), in place. Needs the ``onnx`` package."""
    import onnx

    model = onnx.load(str(onnx_path))
    keep = [(p.key, p.value) for p in model.metadata_props if p.key not in metadata]
    del model.metadata_props[:]
    for k, v in keep + list(metadata.items()):
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(onnx_path))


def has_metadata(onnx_path: Path) -> bool:
    """Whether the ONNX file at ``onnx_path`` carries Deepness metadata (``model_type``).
    Needs the ``onnx`` package."""
    import onnx

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception:  # noqa: BLE001 - unreadable: export it again
        return False
    return any(p.key == "model_type" for p in model.metadata_props)


__all__ = ["NEEDED", "ORTHOLENS_KEY", "ORTHOLENS_FIELDS", "SCALE", "Graph", "file_error",
           "check_type", "merged_metadata", "classes_and_outputs", "card_dict",
           "deepness_metadata", "write_metadata", "has_metadata"]

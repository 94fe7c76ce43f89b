"""INT8 graphs for the CPU: static quantization of a model's ONNX export.

Usage: ``python -m backend.learning.quantize [MODEL_ID ...]`` (default: every model
whose card asks for an INT8 graph that is missing or older than its ``model.onnx``;
``build.py setup`` runs it after the ONNX export).

:func:`quantize_onnx` writes ``model.int8.onnx`` beside a card's ``model.onnx`` with ONNX
Runtime's own tooling (``onnxruntime.quantization``): the graph is first prepared
(shape inference and fusion, ``quant_pre_process``), then quantized statically in the
QDQ format, weights signed 8-bit per output channel, activations unsigned 8-bit per
tensor, with ranges calibrated (min/max by default) on chips of the pv01 *train* split
at the model's GSD, normalised as the card says. EfficientNet-Lite was designed for
this: no squeeze-and-excitation, ReLU6 activations (Tan & Le 2019; the Lite variants'
release notes). The card's ``quantization``
(:class:`~backend.models.quantization.Quantization`) names the calibration, the first
layers kept float32 (``conv_stem`` and the first block: on layers made coarser they
held most of the INT8 graph's loss, at no cost in speed; docs/performance.md) and the
calibration tiles (the first of the train split by name), so the graph is reproducible.

Whether a model's CPU predictor runs the INT8 graph is the card's ``graphs`` field
(``{"cpu": "model.int8.onnx"}``) and, per layer, ``quantization.max_layer_gsd_m``: set
only where held-out and train-split accuracy stay within the tolerance of the fp32 graph
(``tools/perf_check.py int8``); the engine setting ``ORTHOLENS_PRECISION=fp32`` forces
the fp32 graph everywhere (``backend.config.precision``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Iterator, Optional, Sequence, Tuple

import numpy as np

from backend.models.card import ModelCard
from backend.models.quantization import Quantization

#: Tiles of the train split the ranges are calibrated on (the first by name), unless a
#: card's ``quantization`` says otherwise.
CALIBRATION_TILES = Quantization().calibration_tiles
#: The INT8 graph's file name in a model's folder.
INT8_FILE = "model.int8.onnx"


def calibration_chips(card: ModelCard, n_tiles: int = CALIBRATION_TILES,
                      layer_gsds_m: Sequence[float] = ()) -> Iterator[np.ndarray]:
    """Normalised float32 (1, bands, H, W) chips of the first ``n_tiles`` pv01 train
    tiles (by name), averaged down to the card's GSD (``pvdata.average_down``) and
    padded by reflection to multiples of 32.

    Args:
        card: the model's card (GSD, normalisation).
        n_tiles: how many train tiles.
        layer_gsds_m: coarser layer GSDs (metres) to calibrate on as well: each tile
            is also averaged down to each of them and resampled back to the card's GSD
            bilinearly, as the engine reads such a layer (:func:`upsampled`).

    Raises:
        FileNotFoundError: the pv01 data is not where ``ORTHOLENS_DATA`` points.
    """
    from backend.learning import data as pvdata
    n = card.normalize
    mean = np.asarray(n.mean, np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(n.std, np.float32).reshape(1, -1, 1, 1)
    for t in pvdata.list_tiles("train")[:n_tiles]:
        img0, mask = t.read()
        img, _ = pvdata.average_down(img0, mask, card.gsd_m)
        for g in layer_gsds_m:
            yield _normalised(upsampled(pvdata.average_down(img0, mask, g)[0], g,
                                        card.gsd_m, img.shape[1:]), n.scale, mean, std)
        yield _normalised(img, n.scale, mean, std)


def upsampled(image: np.ndarray, gsd_m: float, to_gsd_m: float,
              shape: Tuple[int, int]) -> np.ndarray:
    """uint8 (B, H, W) ``image`` of ``gsd_m`` resampled bilinearly to ``to_gsd_m`` on a
    grid of ``shape`` pixels sharing its top-left corner (GDAL's warper, as
    ``backend.inference.raster.WindowReader`` reads a coarser layer)."""
    from rasterio import Affine
    from rasterio.enums import Resampling
    from rasterio.warp import reproject
    out = np.zeros((image.shape[0],) + tuple(shape), np.uint8)
    reproject(image, out, src_transform=Affine(gsd_m, 0, 0, 0, -gsd_m, 0),
              src_crs="EPSG:3857", dst_transform=Affine(to_gsd_m, 0, 0, 0, -to_gsd_m, 0),
              dst_crs="EPSG:3857", resampling=Resampling.bilinear)
    return out


def _normalised(img: np.ndarray, scale: float, mean: np.ndarray, std: np.ndarray
                ) -> np.ndarray:
    """float32 (1, B, H', W'): uint8 (B, H, W) ``img`` padded by reflection to multiples
    of 32 and normalised (``/ scale``, then ``(x - mean) / std``, (1, B, 1, 1) each)."""
    h, w = img.shape[1:]
    img = np.pad(img, ((0, 0), (0, -h % 32), (0, -w % 32)), mode="reflect")
    x = img[None].astype(np.float32) / np.float32(scale)
    return np.ascontiguousarray((x - mean) / std)


def quantize_onnx(card: ModelCard, out: Optional[Path] = None,
                  chips: Optional[Sequence[np.ndarray]] = None,
                  method: Optional[str] = None, keep_fp32: Optional[Sequence[str]] = None
                  ) -> Path:
    """Write the INT8 graph of ``card``'s ``model.onnx``.

    Args:
        card: a single model's card read from its folder, with its ``model.onnx``.
        out: where to write it (default: :data:`INT8_FILE` in the card's folder).
        chips: calibration inputs (default: :func:`calibration_chips` of the card's
            ``quantization.calibration_tiles``).
        method: the calibration of activation ranges, ``"minmax"`` or
            ``"percentile"`` (ONNX Runtime's, 99.999th); default the card's
            ``quantization`` (:class:`~backend.models.quantization.Quantization`).
        keep_fp32: parts of node names (``"conv_stem"``, ``"encoder/model/blocks.0/"``)
            whose nodes stay float32; default the card's ``quantization``.

    Returns:
        The written path.

    Raises:
        ModelNotFound: no ``model.onnx``.
        FileNotFoundError: no calibration data.
    """
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod,
                                          QuantFormat, QuantType, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from protocol.errors import ModelNotFound
    if not card.onnx_path.is_file():
        raise ModelNotFound(f"model {card.id!r} has no ONNX file at {card.onnx_path}")
    out = Path(out) if out is not None else card.onnx_path.with_name(INT8_FILE)
    spec = card.quantization or Quantization()
    method = method or spec.method
    keep_fp32 = spec.keep_fp32 if keep_fp32 is None else list(keep_fp32)
    recipe = _recipe(method, keep_fp32, spec.calibration_tiles if chips is None else None)
    if chips is None:
        chips = list(calibration_chips(card, spec.calibration_tiles))
    feeds = [{"input": c} for c in chips]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(feeds)

        def get_next(self):
            return next(self._it, None)

    with tempfile.TemporaryDirectory(prefix="ortholens-quant-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(card.onnx_path), str(pre))
        part = out.with_suffix(".onnx.tmp")
        import onnx
        names = [n.name for n in onnx.load(str(pre)).graph.node
                 if any(k in n.name for k in keep_fp32)]
        quantize_static(str(pre), str(part), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, nodes_to_exclude=names, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8,
                        calibrate_method={"minmax": CalibrationMethod.MinMax,
                                          "percentile": CalibrationMethod.Percentile}[method])
        graph = onnx.load(str(part))
        onnx.helper.set_model_props(graph, {RECIPE_KEY: recipe})
        onnx.save(graph, str(part))
        part.replace(out)
    return out


#: The metadata key of an INT8 graph that records how it was made (:func:`_recipe`).
RECIPE_KEY = "ortholens.quantization"


def _recipe(method: str, keep_fp32: Sequence[str], calibration_tiles: Optional[int]) -> str:
    """The settings an INT8 graph is made with, as the JSON kept in its metadata
    (``calibration_tiles`` None: chips given by the caller)."""
    import json
    return json.dumps({"method": method, "keep_fp32": list(keep_fp32),
                       "calibration_tiles": calibration_tiles}, sort_keys=True)


def stale(card: ModelCard) -> bool:
    """True when ``card`` asks for :data:`INT8_FILE` (its ``graphs``) and that file is
    missing, older than its ``model.onnx``, or made otherwise than the card's
    ``quantization`` says (the recipe in its metadata, :data:`RECIPE_KEY`)."""
    if INT8_FILE not in (card.graphs or {}).values() or not card.onnx_path.is_file():
        return False
    q = card.onnx_path.with_name(INT8_FILE)
    if not q.is_file() or q.stat().st_mtime < card.onnx_path.stat().st_mtime:
        return True
    import onnx
    spec = card.quantization or Quantization()
    props = {p.key: p.value for p in onnx.load(str(q)).metadata_props}
    return props.get(RECIPE_KEY) != _recipe(spec.method, spec.keep_fp32,
                                            spec.calibration_tiles)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Quantize the named models (default: the stale ones); returns the exit status.

    Raises:
        ModelNotFound, ModelCorrupt: a named model is missing or unreadable.
        FileNotFoundError: no calibration data.
    """
    import sys

    from backend.models.catalog import list_cards, load_card
    argv = sys.argv[1:] if argv is None else list(argv)
    cards = [load_card(a) for a in argv] if argv else [c for c in list_cards() if stale(c)]
    for c in cards:
        print(f"quantized {quantize_onnx(c)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

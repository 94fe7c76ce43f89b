"""How a card's INT8 graph is made and which layers it serves: its ``quantization``.

``backend.learning.quantize`` makes the graph a card lists in ``graphs`` with these
settings, so ``build.py setup`` rebuilds the same graph; the engine runs it only for
layers no coarser than ``max_layer_gsd_m`` (:meth:`Quantization.serves`), because the
INT8 graph kept its accuracy within the tolerance only there (``tools/perf_check.py
int8``, docs/performance.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from backend.models.record import (Record, as_float, as_int, as_str, doc_field, list_of,
                                   typed_field)


@dataclass
class Quantization(Record):
    """The making and the reach of a card's INT8 graph.

    Attributes:
        method: the calibration of activation ranges, ``"minmax"`` or ``"percentile"``
            (ONNX Runtime's ``CalibrationMethod``).
        keep_fp32: parts of ONNX node names whose nodes stay float32
            (``"conv_stem"``: the first convolution).
        calibration_tiles: the first train-split tiles by name it is calibrated on.
        max_layer_gsd_m: the coarsest layer GSD (metres per pixel) the graph serves;
            coarser layers run the fp32 graph. None: every layer.
    """

    method: str = typed_field(as_str, "minmax")
    keep_fp32: List[str] = typed_field(list_of(as_str), list)
    calibration_tiles: int = typed_field(as_int, 24)
    max_layer_gsd_m: Optional[float] = typed_field(as_float, None)
    _doc: Dict[str, Any] = doc_field()

    def serves(self, layer_gsd_m: Optional[float]) -> bool:
        """Whether a layer of ``layer_gsd_m`` metres per pixel runs the INT8 graph
        (an unknown GSD counts as the model's own: True)."""
        return (layer_gsd_m is None or self.max_layer_gsd_m is None
                or float(layer_gsd_m) <= self.max_layer_gsd_m + 1e-9)

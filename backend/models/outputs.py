"""The card parts of a model imported from an ONNX file: its outputs, and where it
came from.

A model Ortholens trained has one output, logits over background and its classes. A
model imported from another tool's ONNX file (:mod:`backend.models.deepness`) may have
several outputs, each already a probability map: each output is a *class family*
(:class:`OutputSpec`) and is post-processed on its own, so one pixel can hold an object
of each family (``backend.inference.objects``).

Class ids across families: the classes of output 0 are numbered first, in channel
order, then those of output 1, and so on; id 0 is the background of every family. A
model with two softmax outputs of two channels each therefore has the classes 1 (output
0, channel 1) and 2 (output 1, channel 1).

This module depends on nothing else of the backend but the card records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from backend.models.record import (Record, as_dict, as_int, as_str, doc_field, list_of,
                                   typed_field)

#: How an output's channels are read: ``sigmoid``, one channel, the probability of its
#: one class (the background is 1 minus it); ``softmax``, channel 0 the background and
#: channel ``k`` the probability of the family's ``k``-th class.
ACTIVATIONS = ("sigmoid", "softmax")


@dataclass
class OutputSpec(Record):
    """One output of an imported graph: one family of classes.

    Attributes:
        index: the output's position among the graph's outputs (0-based).
        activation: one of :data:`ACTIVATIONS`.
        classes: the card's class ids of the output's class channels: for
            ``sigmoid`` the id of channel 0, for ``softmax`` the ids of channels 1, 2,
            ... in order.
    """

    index: int = typed_field(as_int)
    activation: str = typed_field(as_str)
    classes: List[int] = typed_field(list_of(as_int))
    _doc: Dict[str, Any] = doc_field()


@dataclass
class ImportInfo(Record):
    """Where an imported model came from, for the record.

    Attributes:
        format: the file's format (``"deepness"``).
        file: the name of the file that was imported.
        sha256: its SHA-256, hex.
        imported: ISO 8601 time of the import.
        metadata: the file's metadata as it was (``metadata_props``, values as stored:
            strings).
        values: the values given at the import for metadata the file lacks or that
            replace the file's (``protocol.importing.ImportValues``).
    """

    format: str = typed_field(as_str)
    file: Optional[str] = typed_field(as_str, None)
    sha256: Optional[str] = typed_field(as_str, None)
    imported: Optional[str] = typed_field(as_str, None)
    metadata: Dict[str, Any] = typed_field(as_dict, dict)
    values: Dict[str, Any] = typed_field(as_dict, dict)
    _doc: Dict[str, Any] = doc_field()


#: The formats a model can be imported from (a card's ``format``).
IMPORT_FORMATS = ("deepness",)


def imported_error(fmt: Optional[str], outputs: Sequence[OutputSpec],
                   class_ids: Sequence[int]) -> Optional[str]:
    """Why a card's import fields (``format``, ``outputs``) disagree with its classes
    ``class_ids`` (an unknown format, or :func:`outputs_error`), or None."""
    if fmt is not None and fmt not in IMPORT_FORMATS:
        return f"format must be one of {list(IMPORT_FORMATS)}, not {fmt!r}"
    return outputs_error(outputs, class_ids) if outputs else None


def outputs_error(outputs: Sequence[OutputSpec], class_ids: Sequence[int]) -> Optional[str]:
    """Why ``outputs`` do not describe the classes ``class_ids`` of a card, or None.

    Every class belongs to exactly one output; an output index appears once; a sigmoid
    output has one class; activations are known.
    """
    seen: List[int] = []
    for o in outputs:
        if o.activation not in ACTIVATIONS:
            return f"output {o.index}: activation must be one of {list(ACTIVATIONS)}"
        if o.activation == "sigmoid" and len(o.classes) != 1:
            return f"output {o.index}: a sigmoid output has exactly one class"
        if not o.classes:
            return f"output {o.index} has no classes"
        seen += o.classes
    indices = [o.index for o in outputs]
    if len(set(indices)) != len(indices) or min(indices, default=0) < 0:
        return "output indices must be distinct and not negative"
    if sorted(seen) != sorted(class_ids) or len(set(seen)) != len(seen):
        return (f"the outputs' classes {sorted(seen)} must be the card's class ids "
                f"{sorted(class_ids)}, each once")
    return None


__all__ = ["ACTIVATIONS", "OutputSpec", "ImportInfo", "outputs_error"]

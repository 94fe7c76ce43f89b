"""Typed records read from and written back to JSON: the parts of a model card.

A :class:`Record` is a dataclass whose fields are declared with :func:`typed_field`:
each is the JSON key of the same name, parsed by a check (:func:`as_str`,
:func:`as_int`, ..., :func:`list_of`, :func:`record_of`) that raises TypeError or
ValueError on a value of the wrong type. Every record also declares a last field
``_doc: Dict[str, Any] = doc_field()``: the dict it was parsed from, so that keys this
code does not know (documentation added by hand) and the key order of the file survive
a read-modify-write.

This module depends on nothing else of the backend.
"""

from __future__ import annotations

from dataclasses import MISSING, field, fields
from typing import Any, Callable, Dict, List, Mapping

#: The default of a field that has none: the key is required.
REQUIRED = object()


class BadField(ValueError):
    """A record field of the wrong type, or a required one missing (the card turns it
    into ``ModelCorrupt``)."""


def as_str(x: Any) -> str:
    """``x``, a string. Raises: TypeError: not a string."""
    if not isinstance(x, str):
        raise TypeError(f"expected a string, got {type(x).__name__}")
    return x


def as_int(x: Any) -> int:
    """``x`` as an int (a whole float too, not a bool). Raises: TypeError: not one."""
    if isinstance(x, bool) or not isinstance(x, (int, float)) or int(x) != x:
        raise TypeError(f"expected an integer, got {x!r}")
    return int(x)


def as_float(x: Any) -> float:
    """``x`` as a float (not a bool). Raises: TypeError: not a number."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise TypeError(f"expected a number, got {x!r}")
    return float(x)


def as_bool(x: Any) -> bool:
    """``x``, true or false. Raises: TypeError: not a bool."""
    if not isinstance(x, bool):
        raise TypeError(f"expected true or false, got {x!r}")
    return x


def as_dict(x: Any) -> Dict[str, Any]:
    """A copy of ``x``, an object. Raises: TypeError: not a dict."""
    if not isinstance(x, dict):
        raise TypeError(f"expected an object, got {type(x).__name__}")
    return dict(x)


def list_of(item: Callable[[Any], Any]) -> Callable[[Any], List[Any]]:
    """The check of a list whose items ``item`` checks."""
    def check(x: Any) -> List[Any]:
        if not isinstance(x, list):
            raise TypeError(f"expected a list, got {type(x).__name__}")
        return [item(v) for v in x]
    return check


def record_of(cls) -> Callable[[Any], Any]:
    """The check of an object parsed as the record ``cls``."""
    return lambda x: cls.from_dict(as_dict(x))


def typed_field(check: Callable[[Any], Any], default: Any = REQUIRED) -> Any:
    """A typed record field: ``check`` parses its JSON value (raising TypeError or
    ValueError), ``default`` (a value, or a callable making one) is used when the key
    is absent or null; without a default the key is required."""
    meta = {"check": check}
    if default is REQUIRED:
        return field(metadata=meta)
    if callable(default):
        return field(default_factory=default, metadata=meta)
    return field(default=default, metadata=meta)


def doc_field() -> Any:
    """The ``_doc`` field every record declares last (see the module docstring)."""
    return field(default_factory=dict, repr=False, compare=False)


def _default(f) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return REQUIRED


def _json(v: Any) -> Any:
    if isinstance(v, Record):
        return v.to_dict()
    if isinstance(v, (list, tuple)):
        return [_json(x) for x in v]
    if isinstance(v, dict):
        return {k: _json(x) for k, x in v.items()}
    return v


class Record:
    """A typed part of a card, read from and written back to JSON.

    Each field declared with :func:`typed_field` is the JSON key of the same name.
    ``_doc`` (private) holds the dict the record was parsed from: keys this module does
    not know (documentation added by hand) and the key order of the file survive a
    read-modify-write. :meth:`to_dict` writes every typed field that was in the file or
    differs from its default, on top of that dict.
    """

    _doc: Dict[str, Any]

    @classmethod
    def parse_fields(cls, d: Mapping[str, Any], **extra: Any):
        """Parse the typed fields of ``d`` (``extra``: non-JSON constructor arguments).

        Raises:
            BadField: a required key is missing or a value has the wrong type.
        """
        kwargs = dict(extra)
        for f in fields(cls):
            check = f.metadata.get("check")
            if check is None:
                continue
            value, default = d.get(f.name), _default(f)
            if value is None:
                if default is REQUIRED:
                    raise BadField(f"missing field {f.name!r}")
                kwargs[f.name] = default
                continue
            try:
                kwargs[f.name] = check(value)
            except (TypeError, ValueError) as exc:
                raise BadField(f"field {f.name!r}: {exc}") from None
        return cls(_doc=dict(d), **kwargs)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]):
        """Parse a JSON object.

        Raises:
            BadField: a required key is missing or a value has the wrong type (a
                ``ModelCorrupt`` once it reaches ``ModelCard.from_dict``).
        """
        return cls.parse_fields(d)

    def to_dict(self) -> Dict[str, Any]:
        """The JSON form (a new dict)."""
        out = dict(self._doc)
        for f in fields(self):
            if "check" not in f.metadata:
                continue
            v, default = getattr(self, f.name), _default(f)
            if f.name in self._doc or default is REQUIRED or v != default:
                out[f.name] = _json(v)
        return out

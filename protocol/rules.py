"""Rules of request fields: each declared once, beside its parameter, and applied.

A :class:`Rule` says whether a request field is required and which checker of
:mod:`protocol.checks` judges its value. A parameter class of :mod:`protocol.params`
(a subclass of :class:`RequestParams`) declares the rule of each of its fields with
:func:`rule`, or with :func:`flat` for a parameter class whose fields travel in the
same header; :func:`request_rules` reads them back, in field order.
``protocol.schema`` assembles them, with the rules of the requests that have no
parameter class, into the schema of every request type; :func:`check_fields` checks a
header against such rules.

Needs only the standard library.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Dict, Mapping, NamedTuple, Optional, Sequence

from .checks import Checker, check_anything, check_token, short, string
from .errors import E_BAD_REQUEST, ProtocolError
from .framing import request_header

#: A check of a whole header once its fields passed: header -> error text, or None.
HeaderCheck = Callable[[Mapping[str, Any]], Optional[str]]

_RULE, _FLAT = "protocol.rule", "protocol.flat"


class Rule(NamedTuple):
    """How one request field is checked.

    Attributes:
        required: the header must carry the field.
        check: its checker (value -> error text, or None).
    """

    required: bool
    check: Checker


#: The fields every request header may carry, checked before its own.
COMMON_RULES: Dict[str, Rule] = {
    "v": Rule(True, check_anything),
    "type": Rule(True, check_anything),
    "id": Rule(True, string(128)),
    "arrays": Rule(False, check_anything),
    "token": Rule(False, check_token),
}


def rule(check: Checker, *, required: bool = False, **field_args: Any) -> Any:
    """A dataclass field of a parameter class whose request field ``check`` checks.

    Args:
        check: the field's checker.
        required: the request header must carry it (a field with a Python default may
            still be required on the wire: the header always holds its value).
        field_args: passed to :func:`dataclasses.field` (``default``...).
    """
    return dataclasses.field(metadata={_RULE: Rule(required, check)}, **field_args)


def flat(params_class: type, *, without: Sequence[str] = (),
         rules: Optional[Mapping[str, Rule]] = None) -> Any:
    """A dataclass field (without a default) holding another parameter class whose
    fields travel in this request's header, at its level.

    Args:
        params_class: that class.
        without: its fields this request does not take.
        rules: the rules that differ from that class's, by field name.
    """
    return dataclasses.field(
        metadata={_FLAT: (params_class, tuple(without), dict(rules or {}))})


@functools.lru_cache(maxsize=None)
def request_rules(params_class: type) -> Dict[str, Rule]:
    """Field name -> :class:`Rule` of a parameter class's request, in field order (the
    order the fields are checked in). Do not modify the returned dict: it is cached."""
    out: Dict[str, Rule] = {}
    for f in dataclasses.fields(params_class):
        if _RULE in f.metadata:
            out[f.name] = f.metadata[_RULE]
        elif _FLAT in f.metadata:
            inner, without, rules = f.metadata[_FLAT]
            out.update({name: rules.get(name, r) for name, r in request_rules(inner).items()
                        if name not in without})
    return out


def check_fields(mtype: str, header: Mapping[str, Any], rules: Mapping[str, Rule],
                 whole: Optional[HeaderCheck] = None) -> None:
    """Check the fields of a request header of type ``mtype`` (its version and type
    already known to be right): no unknown field, each required one present, each
    present one valid (:data:`COMMON_RULES`, then ``rules`` in their order), then the
    whole header with ``whole``.

    Raises:
        ProtocolError: ``E_BAD_REQUEST``, the message naming the request type and the
            first field at fault.
    """
    schema = dict(COMMON_RULES)
    schema.update(rules)
    unknown = set(header) - set(schema)
    if unknown:
        raise ProtocolError(f"{mtype}: unknown field(s) "
                            f"{short(sorted(unknown), 200)}", E_BAD_REQUEST)
    for name, (required, check) in schema.items():
        if name not in header:
            if required:
                raise ProtocolError(f"{mtype}: missing field '{name}'", E_BAD_REQUEST)
            continue
        err = check(header[name])
        if err:
            raise ProtocolError(f"{mtype}: field '{name}' {err}", E_BAD_REQUEST)
    err = whole(header) if whole else None
    if err:
        raise ProtocolError(f"{mtype}: {err}", E_BAD_REQUEST)


def _wire_value(v: Any) -> Any:
    """A field's value as JSON: a typed value's ``to_wire()``, a tuple as a list (of
    wire values)."""
    if hasattr(v, "to_wire"):
        return v.to_wire()
    if isinstance(v, tuple):
        return [_wire_value(x) for x in v]
    return v


class RequestParams:
    """Base of a parameter dataclass: its conversion to and from a request header.

    Class attributes:
        TYPE: the request type.
        HEADER_CHECK: the check of the whole header once its fields passed, or None.
    """

    TYPE = ""
    HEADER_CHECK: Optional[HeaderCheck] = None

    def wire_fields(self) -> Dict[str, Any]:
        """The request fields: those not None, as JSON values."""
        return {f.name: _wire_value(getattr(self, f.name))
                for f in dataclasses.fields(self)  # type: ignore[arg-type]
                if getattr(self, f.name) is not None}

    def to_header(self, token: Optional[str] = None,
                  request_id: Optional[str] = None) -> Dict[str, Any]:
        """The checked request header (fields left None are omitted).

        Args:
            token: the daemon's access token, when it needs one.
            request_id: the request id (default: a fresh one).

        Raises:
            ProtocolError: ``bad_request`` for a value its rule refuses.
        """
        ids = {} if request_id is None else {"id": request_id}
        header = request_header(self.TYPE, token=token, **ids, **self.wire_fields())
        check_fields(self.TYPE, header, request_rules(type(self)), self.HEADER_CHECK)
        return header

    @classmethod
    def from_header(cls, header: Mapping[str, Any]):
        """Parameters of a request header that ``protocol.schema.validate_request``
        accepted (other fields, such as ``id`` and ``token``, are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in header.items() if k in names})


__all__ = ["HeaderCheck", "Rule", "COMMON_RULES", "rule", "flat", "request_rules",
           "check_fields", "RequestParams"]

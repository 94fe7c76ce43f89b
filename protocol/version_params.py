"""Typed parameters of the requests about a model's versions that take more than a
model id: ``versions`` (with the extent whose version in use the reply names) and
``delete`` (of a user version).

As :mod:`protocol.params`, each field declares the checker of its request field
(:func:`protocol.rules.rule`), from which ``protocol.schema`` takes their schemas.
Needs only the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from .checks import check_boolean, check_model, check_optional_extent, check_optional_string
from .rules import RequestParams, rule

Extent = Tuple[float, float, float, float]


@dataclass(frozen=True)
class VersionsParams(RequestParams):
    """A ``versions`` request: the versions of a model's lineage.

    Attributes:
        model: any id of the lineage (``pv-unet-efl0`` or ``pv-unet-efl0@2``); with an
            extent, the model a detection there would be asked for (the dock's).
        extent: ``(xmin, ymin, xmax, ymax)`` in ``extent_crs``; the reply's ``here``
            then names the version in use there (what a detection of ``model`` with
            ``by_area`` runs) and why. None: no ``here``.
        extent_crs: CRS of ``extent`` (WKT or ``EPSG:n``).
    """

    TYPE = "versions"

    model: str = rule(check_model, required=True)
    extent: Optional[Extent] = rule(check_optional_extent, default=None)
    extent_crs: Optional[str] = rule(check_optional_string, default=None)

    def __post_init__(self) -> None:
        if self.extent is not None:
            object.__setattr__(self, "extent", tuple(float(v) for v in self.extent))


@dataclass(frozen=True)
class DeleteParams(RequestParams):
    """A ``delete`` request: remove a user version (``<base>@<n>``) for good.

    A shipped model is never deleted. The active version, or a version in use in its
    area, is deleted only with ``roll_back`` (the user confirmed): it is first rolled
    back (the active one's parent becomes active; an area version is taken out of use
    there). Its number is never given to another version.

    Attributes:
        model: the version to delete.
        roll_back: take it out of use first when it is in use; None/False: refuse a
            version in use.
    """

    TYPE = "delete"

    model: str = rule(check_model, required=True)
    roll_back: Optional[bool] = rule(check_boolean, default=None)


__all__ = ["VersionsParams", "DeleteParams"]

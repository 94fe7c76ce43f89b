"""Typed request parameters: what a ``detect``, ``batch`` or ``retrain`` job is asked to do.

One dataclass per task (as Deepness keeps one parameter dataclass per processing
task), and :class:`PixelUpload` for an image streamed to the daemon in windows. They
are built by the plugin (dock, Processing algorithms), turned into a request header by
:meth:`to_header` and rebuilt by the daemon from the validated header with
:meth:`from_header`. Each field declares the checker of its request field
(:func:`protocol.rules.rule`), from which ``protocol.schema`` derives the schemas of
these requests. ``None`` means "not given": the daemon then uses the model card's value
(threshold, minimum area, simplification, orthogonalisation) or its own default (batch
size, batch region size, upload window size, retrain settings). The dock and the
Processing algorithms follow the same rule.

Needs only the standard library.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

from .checks import (check_bands, check_boolean, check_crs, check_dtype, check_features,
                     check_file_source, check_gpkg_path, check_image_side,
                     check_layer_name, check_model, check_nodata, check_optional_extent,
                     check_optional_model,
                     check_optional_string, check_reviewed, check_source,
                     check_source_or_upload, check_stretch, check_transform, check_upload,
                     int_range, num_range, one_of)
from .errors import ProtocolError
from .framing import DTYPE_BYTES, MAX_WINDOW_PX, MIN_WINDOW_PX
from .rules import RequestParams, Rule, check_fields, flat, request_rules, rule

Extent = Tuple[float, float, float, float]


@dataclass(frozen=True)
class FileSource:
    """A raster file the daemon reads itself (GeoTIFF, VRT, ... anything GDAL opens).

    Attributes:
        path: file path on the daemon's machine.
    """

    path: str
    kind: str = field(default="file", init=False)

    def to_wire(self) -> Dict[str, Any]:
        """``{"kind": "file", "path": ...}``."""
        return {"kind": "file", "path": self.path}


@dataclass(frozen=True)
class PixelSource:
    """Pixels sent with the request as array frame 0, shape (bands, H, W).

    Attributes:
        crs: CRS of the pixels, WKT or an authority id such as ``EPSG:31256``.
        transform: GDAL-order affine ``(a, b, c, d, e, f)``: x = c + a*col + b*row,
            y = f + d*col + e*row, in CRS units.
        nodata: pixel value meaning "no data", or None.
    """

    crs: str
    transform: Tuple[float, float, float, float, float, float]
    nodata: Optional[float] = None
    kind: str = field(default="pixels", init=False)

    def to_wire(self) -> Dict[str, Any]:
        """``{"kind": "pixels", "crs", "transform", "nodata"?}``."""
        d: Dict[str, Any] = {"kind": "pixels", "crs": self.crs,
                             "transform": [float(v) for v in self.transform]}
        if self.nodata is not None:
            d["nodata"] = self.nodata
        return d


@dataclass(frozen=True)
class UploadSource:
    """A completed pixel upload (see :class:`PixelUpload`), named by its id: the pixels
    already wait on the daemon's side. Only a ``detect`` takes one, and consumes it.

    Attributes:
        upload_id: the id of the daemon's ``upload`` reply.
    """

    upload_id: str
    kind: str = field(default="upload", init=False)

    def to_wire(self) -> Dict[str, Any]:
        """``{"kind": "upload", "upload_id": ...}``."""
        return {"kind": "upload", "upload_id": self.upload_id}


Source = Union[FileSource, PixelSource, UploadSource]


def source_from_wire(d: Union[Source, Mapping[str, Any]]) -> Source:
    """A :data:`Source` from its wire form (a typed source is returned as it is).

    Raises:
        ProtocolError: ``bad_request`` for anything that is not a valid source.
    """
    if isinstance(d, (FileSource, PixelSource, UploadSource)):
        return d
    err = check_source_or_upload(d)
    if err:
        raise ProtocolError(f"source {err}")
    if d["kind"] == "file":
        return FileSource(d["path"])
    if d["kind"] == "upload":
        return UploadSource(d["upload_id"])
    return PixelSource(d["crs"], tuple(float(v) for v in d["transform"]), d.get("nodata"))


@dataclass(frozen=True)
class Stretch:
    """How raster values become the model's 8-bit input (16-bit, float rasters).

    Attributes:
        mode: ``"percentile"`` (per band, the ``low`` and ``high`` percentiles of the
            valid pixels over the extent map to 0 and 255), ``"minmax"`` (the given
            ``min`` and ``max`` per band map to 0 and 255) or ``"none"`` (values are
            clipped to 0-255 as they are).
        low, high: percentiles, 0..100 (``percentile``); default 2 and 98, the
            default of QGIS's own "cumulative count cut".
        min, max: per mapped band, in raster units (``minmax``).
    """

    mode: str = "percentile"
    low: float = 2.0
    high: float = 98.0
    min: Optional[Tuple[float, ...]] = None
    max: Optional[Tuple[float, ...]] = None

    def to_wire(self) -> Dict[str, Any]:
        """The ``stretch`` field (see ``protocol.checks.check_stretch``)."""
        if self.mode == "percentile":
            return {"mode": "percentile", "low": float(self.low), "high": float(self.high)}
        if self.mode == "minmax":
            return {"mode": "minmax", "min": [float(v) for v in self.min or ()],
                    "max": [float(v) for v in self.max or ()]}
        return {"mode": self.mode}


def stretch_from_wire(d: Union[Stretch, Mapping[str, Any], None]) -> Optional[Stretch]:
    """A :class:`Stretch` from its wire form (None and typed values pass through).

    Raises:
        ProtocolError: ``bad_request`` for an invalid stretch.
    """
    if d is None or isinstance(d, Stretch):
        return d
    err = check_stretch(d)
    if err:
        raise ProtocolError(f"stretch {err}")
    return Stretch(d["mode"], float(d.get("low", 2.0)), float(d.get("high", 98.0)),
                   tuple(float(v) for v in d["min"]) if d.get("min") else None,
                   tuple(float(v) for v in d["max"]) if d.get("max") else None)


def _extent(x: Optional[Sequence[float]]) -> Optional[Extent]:
    return None if x is None else tuple(float(v) for v in x)  # type: ignore[return-value]


@dataclass(frozen=True)
class DetectParams(RequestParams):
    """A ``detect`` request: find objects in an extent of a raster.

    Attributes:
        source: the raster (:class:`FileSource`, :class:`PixelSource`,
            :class:`UploadSource`; a wire dict is converted).
        model: model id (``<base>`` or a user version ``<base>@<n>``); None: the engine
            chooses by the layer's GSD (``protocol.choice``).
        extent: ``(xmin, ymin, xmax, ymax)`` in ``extent_crs``; None for the whole raster.
        extent_crs: CRS of ``extent`` (WKT or ``EPSG:n``); None: the raster's CRS.
        threshold: class probability threshold in (0, 1]; None: the card's.
        min_area_m2: smallest object kept, square metres; None: the card's.
        simplify_m: polygon simplification tolerance, metres; None: the card's.
        bands: 1-based raster bands read as the model's input bands (a band may
            repeat: ``(1, 1, 1)`` feeds a grey band as RGB); None: the bands the
            raster's colour interpretation names red, green, blue, else the first.
        stretch: how 16-bit and float values become 0-255 (:class:`Stretch`); None:
            per-band 2-98 % percentiles for rasters that are not 8-bit.
        batch_size: tiles per model call; None: the daemon's default (4).
        orthogonalize: replace near-rectangular polygons by their minimum rotated
            rectangle; None: the card's.
        by_area: True: where a version of ``model``'s lineage retrained on this area
            is in use and its site footprint covers the whole extent, run that version
            instead (the result's ``stats`` name the model used and why); None/False:
            exactly ``model``.
    """

    TYPE = "detect"

    source: Source = rule(check_source_or_upload, required=True)
    model: Optional[str] = rule(check_optional_model, default=None)
    extent: Optional[Extent] = rule(check_optional_extent, default=None)
    extent_crs: Optional[str] = rule(check_optional_string, default=None)
    threshold: Optional[float] = rule(num_range(0.0, 1.0, lo_open=True), default=None)
    min_area_m2: Optional[float] = rule(num_range(0.0, 1e6), default=None)
    simplify_m: Optional[float] = rule(num_range(0.0, 100.0), default=None)
    bands: Optional[Tuple[int, ...]] = rule(check_bands, default=None)
    stretch: Optional[Stretch] = rule(check_stretch, default=None)
    batch_size: Optional[int] = rule(int_range(1, 256), default=None)
    orthogonalize: Optional[bool] = rule(check_boolean, default=None)
    by_area: Optional[bool] = rule(check_boolean, default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", source_from_wire(self.source))
        object.__setattr__(self, "extent", _extent(self.extent))
        if self.bands is not None:
            object.__setattr__(self, "bands", tuple(int(b) for b in self.bands))
        object.__setattr__(self, "stretch", stretch_from_wire(self.stretch))


@dataclass(frozen=True)
class PixelUpload(RequestParams):
    """An ``upload`` request: an image the client streams to the daemon window by
    window (``window`` requests), then names as an :class:`UploadSource`.

    Attributes:
        crs: CRS of the pixels, WKT or an authority id such as ``EPSG:32651``.
        transform: affine ``(a, b, c, d, e, f)``: x = c + a*col + b*row,
            y = f + d*col + e*row, in CRS units (as :class:`PixelSource`).
        width, height: image size, pixels.
        count: bands.
        dtype: one of ``protocol.framing.ALLOWED_DTYPES``.
        nodata: pixel value meaning "no data", or None.
        window_px: window side the client would like, pixels; None: the daemon's
            (``protocol.framing.DEFAULT_WINDOW_PX``). The reply's ``window_px`` is the
            one to use.

    The whole image may hold at most ``protocol.framing.MAX_UPLOAD_BYTES``
    (:func:`protocol.checks.check_upload`).
    """

    TYPE = "upload"
    HEADER_CHECK = staticmethod(check_upload)

    crs: str = rule(check_crs, required=True)
    transform: Tuple[float, float, float, float, float, float] = rule(check_transform,
                                                                     required=True)
    width: int = rule(check_image_side, required=True)
    height: int = rule(check_image_side, required=True)
    count: int = rule(int_range(1, 16), required=True, default=3)
    dtype: str = rule(check_dtype, required=True, default="uint8")
    nodata: Optional[float] = rule(check_nodata, default=None)
    window_px: Optional[int] = rule(int_range(MIN_WINDOW_PX, MAX_WINDOW_PX), default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "transform", tuple(float(v) for v in self.transform))

    @property
    def nbytes(self) -> int:
        """Size of the whole image, bytes."""
        return self.width * self.height * self.count * DTYPE_BYTES[self.dtype]


@dataclass(frozen=True)
class BatchParams(RequestParams):
    """A ``batch`` request: a streaming, resumable detection over a raster of any size
    that writes its polygons to a GeoPackage.

    Attributes:
        detect: what to detect where (its fields travel in the ``batch`` header; its
            ``source`` must be a :class:`FileSource`: a batch job reads the raster again
            when it resumes; a batch job runs the model it names, ``by_area`` is not
            sent).
        out_path: the ``.gpkg`` to write.
        layer: its table; None: ``detections``.
        overwrite: replace an existing ``out_path``.
        region_px: region side, pixels at the model's GSD; None: the daemon's (2048).
        halo_px: first halo around a region, pixels; None: from the model's tiling.
        executor: ``local`` or ``ray``; None: ``local``.
    """

    TYPE = "batch"

    detect: DetectParams = flat(DetectParams, without=("by_area",),
                                rules={"source": Rule(True, check_file_source)})
    out_path: str = rule(check_gpkg_path, required=True)
    layer: Optional[str] = rule(check_layer_name, default=None)
    overwrite: Optional[bool] = rule(check_boolean, default=None)
    region_px: Optional[int] = rule(int_range(32, 16384), default=None)
    halo_px: Optional[int] = rule(int_range(0, 8192), default=None)
    executor: Optional[str] = rule(one_of("local", "ray"), default=None)

    def to_header(self, token: Optional[str] = None,
                  request_id: Optional[str] = None) -> Dict[str, Any]:
        """The validated ``batch`` header (see :meth:`DetectParams.to_header`).

        Raises:
            ProtocolError: ``bad_request`` for a value outside the schema.
        """
        header = self.detect.to_header(token, request_id)
        header["type"] = self.TYPE
        header.update({k: v for k, v in self.wire_fields().items() if k != "detect"})
        check_fields(self.TYPE, header, request_rules(BatchParams))
        return header

    @classmethod
    def from_header(cls, header: Mapping[str, Any]) -> "BatchParams":
        """Parameters of a validated ``batch`` header."""
        names = {f.name for f in fields(cls)} - {"detect"}
        return cls(detect=DetectParams.from_header(header),
                   **{k: v for k, v in header.items() if k in names})


@dataclass(frozen=True)
class CorrectedFeature:
    """One polygon of the user's corrected layer.

    Attributes:
        wkt: geometry as WKT, in the retrain request's ``crs``.
        class_name: class name from the model card (or None with ``class_id``).
        class_id: class index, 1.. (or None with ``class_name``).
        area: index of the reviewed area it belongs to (tiles that overlap), or None.
        review: its review state (``protocol.results.REVIEW_STATES``), or None: a
            ``deleted`` polygon is background; a retrain in ``review`` mode labels only
            the reviewed ones (see :class:`RetrainParams`).
    """

    wkt: str
    class_name: Optional[str] = None
    class_id: Optional[int] = None
    area: Optional[int] = None
    review: Optional[str] = None

    def to_wire(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {"wkt": self.wkt}
        for k, v in (("class", self.class_name), ("class_id", self.class_id),
                     ("area", self.area), ("review", self.review)):
            if v is not None:
                d[k] = v
        return d

    @classmethod
    def from_wire(cls, d: Union["CorrectedFeature", Mapping[str, Any]]
                  ) -> "CorrectedFeature":
        if isinstance(d, CorrectedFeature):
            return d
        return cls(d["wkt"], d.get("class"), d.get("class_id"), d.get("area"),
                   d.get("review"))


@dataclass(frozen=True)
class ReviewedArea:
    """An area the user reviewed: inside it, whatever no corrected feature covers is
    background.

    Attributes:
        extent: ``(xmin, ymin, xmax, ymax)`` in ``extent_crs``; None: the whole source.
        extent_crs: CRS of ``extent``; None: the raster's.
        source: another raster than the request's (tiles of a mosaic); None: the
            request's.
        holdout: True to keep it for evaluation only, False to train on it, None to let
            the daemon split.
        array: for a :class:`PixelSource` ``source``, the index of its array frame.
    """

    extent: Optional[Extent] = None
    extent_crs: Optional[str] = None
    source: Optional[Source] = None
    holdout: Optional[bool] = None
    array: Optional[int] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "extent", _extent(self.extent))
        if self.source is not None:
            object.__setattr__(self, "source", source_from_wire(self.source))

    def to_wire(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {}
        for k, v in asdict(self).items():
            if k == "source" and self.source is not None:
                d[k] = self.source.to_wire()
            elif v is not None:
                d[k] = list(v) if isinstance(v, tuple) else v
        return d

    @classmethod
    def from_wire(cls, d: Union["ReviewedArea", Mapping[str, Any]]) -> "ReviewedArea":
        if isinstance(d, ReviewedArea):
            return d
        return cls(**{k: d.get(k) for k in ("extent", "extent_crs", "source", "holdout",
                                             "array")})


@dataclass(frozen=True)
class RetrainParams(RequestParams):
    """A ``retrain`` request: fine-tune a model on the user's corrections.

    Attributes:
        source: the raster the corrections were made on.
        model: the model (or version ``<base>@<n>``) to fine-tune.
        features: the corrected layer, every polygon in it (dicts are converted).
        crs: CRS of the features (WKT or ``EPSG:n``); None: the raster's.
        reviewed: the reviewed areas; None: one, ``extent`` over ``source``.
        extent, extent_crs: the reviewed area when ``reviewed`` is None.
        budget_s: time of the whole job (preparing the data, training, evaluating,
            saving), seconds; the training gets what the other steps leave.
        steps: at most this many training steps; None: as many as the budget allows.
        seed: random seed; None: the daemon's (0).
        activate: make an accepted version active; None: yes.
        guard: check the model's original validation data; None: yes.
        holdout_fraction: share of the reviewed areas kept to evaluate the candidate.
        max_iou_drop: largest accepted drop of pixel IoU on the guard.
        replay_fraction: share of each batch drawn from the original training data.
        mistake_weight: loss weight of pixels the model got wrong.
        invalid_geometry: ``repair`` or ``refuse`` invalid polygons.
        bands: 1-based raster bands read as the model's input bands.
        scope: ``"area"``: a version for the area it is taught on, judged on the
            held-out corrections, the guard only warning; ``"general"``: a version for
            everywhere, the guard vetoing; None: ``"area"``.
        site_margin_m: how far an area version's footprint reaches beyond the reviewed
            extents, metres; None: the daemon's (250).
        mode: ``"extent"``: inside a reviewed area whatever no feature covers is
            background; ``"review"`` (a partial review): only the features with a
            reviewed ``review`` state and a margin around each are labelled, the rest
            of the area is ignored by the loss and the gate
            (``backend.learning.partial``); None: ``"extent"``.
        margin_m: the margin of ``review`` mode, metres; None: the daemon's (2).
    """

    TYPE = "retrain"

    source: Source = rule(check_source, required=True)
    model: str = rule(check_model, required=True)
    features: Tuple[CorrectedFeature, ...] = rule(check_features, required=True)
    crs: Optional[str] = rule(check_optional_string, default=None)
    reviewed: Optional[Tuple[ReviewedArea, ...]] = rule(check_reviewed, default=None)
    extent: Optional[Extent] = rule(check_optional_extent, default=None)
    extent_crs: Optional[str] = rule(check_optional_string, default=None)
    budget_s: Optional[float] = rule(num_range(1.0, 86400.0), default=None)
    steps: Optional[int] = rule(int_range(1, 1_000_000), default=None)
    seed: Optional[int] = rule(int_range(0, 2 ** 31 - 1), default=None)
    activate: Optional[bool] = rule(check_boolean, default=None)
    guard: Optional[bool] = rule(check_boolean, default=None)
    holdout_fraction: Optional[float] = rule(num_range(0.05, 0.5), default=None)
    max_iou_drop: Optional[float] = rule(num_range(0.0, 1.0), default=None)
    replay_fraction: Optional[float] = rule(num_range(0.0, 0.95), default=None)
    mistake_weight: Optional[float] = rule(num_range(1.0, 100.0), default=None)
    invalid_geometry: Optional[str] = rule(one_of("repair", "refuse"), default=None)
    bands: Optional[Tuple[int, ...]] = rule(check_bands, default=None)
    scope: Optional[str] = rule(one_of("area", "general"), default=None)
    site_margin_m: Optional[float] = rule(num_range(0.0, 10000.0), default=None)
    mode: Optional[str] = rule(one_of("extent", "review"), default=None)
    margin_m: Optional[float] = rule(num_range(0.0, 50.0), default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", source_from_wire(self.source))
        object.__setattr__(self, "features",
                           tuple(CorrectedFeature.from_wire(f) for f in self.features))
        if self.reviewed is not None:
            object.__setattr__(self, "reviewed",
                               tuple(ReviewedArea.from_wire(a) for a in self.reviewed))
        object.__setattr__(self, "extent", _extent(self.extent))
        if self.bands is not None:
            object.__setattr__(self, "bands", tuple(int(b) for b in self.bands))


__all__ = ["FileSource", "PixelSource", "UploadSource", "Source", "source_from_wire",
           "Stretch", "stretch_from_wire",
           "DetectParams", "PixelUpload", "BatchParams", "CorrectedFeature", "ReviewedArea", "RetrainParams"]

"""Which raster bands feed the model, and how values that are not 8-bit become 0-255.

:func:`choose_bands` follows the colour interpretation (or an explicit mapping); the
alpha band is the valid-data mask, never a model band. :func:`plan_stretch` maps 16-bit
and float bands linearly from a value range (by default the 2-98 % percentiles over the
extent, QGIS's "cumulative count cut") to 0-255; :func:`to_uint8` applies it.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from protocol.errors import InputError


def is_paletted(ds) -> bool:
    from rasterio.enums import ColorInterp
    return ds.colorinterp[0] == ColorInterp.palette


#: Data types the model's input can be stretched from.
STRETCHABLE = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64")


def choose_bands(ds, bands_req: Optional[Sequence[int]], n_bands: int
                 ) -> Tuple[List[int], List[str]]:
    """Source bands that feed the model, and warnings.

    Without a requested mapping: the bands whose colour interpretation is red, green
    and blue (in that order) when the raster names them, else the first ``n_bands``;
    a single band (grey, or grey + alpha) is repeated as R, G and B. The alpha band,
    if any, is never a model band: it is the valid-data mask.

    Args:
        ds: the open dataset.
        bands_req: explicit 1-based mapping (bands may repeat), or None.
        n_bands: bands the model takes (3: R, G, B).

    Raises:
        InputError: band numbers out of range, wrong band count, or a data type that
            cannot be stretched (complex).
    """
    from rasterio.enums import ColorInterp

    warnings: List[str] = []
    alpha = alpha_band(ds)
    colour = [b for b in range(1, ds.count + 1) if b != alpha]
    if bands_req:
        bad = [b for b in bands_req if not 1 <= b <= ds.count]
        if bad:
            raise InputError(f"band(s) {bad} requested but the raster has {ds.count}")
        if len(bands_req) != n_bands:
            raise InputError(f"the model takes {n_bands} bands; {len(bands_req)} given")
        bands = list(bands_req)
    else:
        ci = {c: i for i, c in enumerate(ds.colorinterp, start=1)}
        rgb = [ci.get(c) for c in (ColorInterp.red, ColorInterp.green, ColorInterp.blue)]
        if n_bands == 3 and all(rgb):
            bands = [int(b) for b in rgb]
        elif len(colour) >= n_bands:
            bands = colour[:n_bands]
        elif len(colour) == 1:
            bands = colour * n_bands
            warnings.append("the raster has one band; it is used as grey for R, G and "
                            "B (the model learnt colour imagery: expect lower accuracy)")
        else:
            raise InputError(
                f"the model needs {n_bands} bands (RGB) but the raster has {ds.count} "
                f"({ds.dtypes[0]}); choose a {n_bands}-band RGB orthophoto or give an "
                f"explicit band mapping")
        unused = [b for b in colour if b not in bands]
        if unused:
            rest = f"; band {alpha} is the alpha (valid-data) mask" if alpha else ""
            warnings.append(f"the raster has {ds.count} bands; bands {bands} are used as "
                            f"RGB, band(s) {unused} ignored{rest}")
    bad_types = sorted({ds.dtypes[b - 1] for b in bands} - set(STRETCHABLE))
    if bad_types:
        raise InputError(f"bands {bands} are of type {bad_types}, which cannot be "
                         f"stretched to the model's 8-bit input")
    return bands, warnings


def plan_stretch(ds, bands: Sequence[int], bounds: Sequence[float],
                 stretch: Optional[Any] = None, sample_px: int = 1024
                 ) -> Tuple[Optional[List[Tuple[float, float]]], Optional[Dict[str, Any]]]:
    """The value range of each mapped band that becomes the model's 0-255.

    8-bit bands without a requested stretch are left as they are. Otherwise, by
    ``stretch.mode``: ``"percentile"`` (the default for 16-bit and float rasters) takes
    the ``low`` and ``high`` percentiles (2 and 98: QGIS's "cumulative count cut") of
    the valid pixels of each band over ``bounds``, read decimated to at most
    ``sample_px`` pixels a side (nearest); ``"minmax"`` takes the given values;
    ``"none"`` clips the values to 0-255.

    Args:
        ds: the open dataset.
        bands: 1-based mapped bands.
        bounds: ``(xmin, ymin, xmax, ymax)`` in the raster's CRS.
        stretch: a ``protocol.params.Stretch`` or None.
        sample_px: longest side of the sample, pixels.

    Returns:
        ``(ranges, info)``: ``[(low, high), ...]`` per mapped band and the stats entry,
        or ``(None, None)`` when nothing is stretched.

    Raises:
        InputError: a ``minmax`` with another number of bands than mapped, or no valid
            pixel in the extent to take percentiles from.
    """
    from rasterio.windows import from_bounds

    dtypes = sorted({ds.dtypes[b - 1] for b in bands})
    mode = stretch.mode if stretch is not None else (
        None if dtypes == ["uint8"] else "percentile")
    if mode is None:
        return None, None
    info: Dict[str, Any] = {"mode": mode, "dtype": ",".join(dtypes)}
    if mode == "none":
        ranges = [(0.0, 255.0)] * len(bands)
    elif mode == "minmax":
        lo, hi = list(stretch.min or ()), list(stretch.max or ())
        if len(lo) != len(bands):
            raise InputError(f"the stretch gives {len(lo)} min/max pair(s) for "
                             f"{len(bands)} mapped bands", field="stretch")
        ranges = [(float(a), float(b)) for a, b in zip(lo, hi)]
    else:
        low = stretch.low if stretch is not None else 2.0
        high = stretch.high if stretch is not None else 98.0
        info.update(low=low, high=high)
        win = from_bounds(*bounds, transform=ds.transform).round_offsets().round_lengths()
        win = win.intersection(rasterio_window_full(ds))
        scale = max(win.width, win.height) / float(sample_px)
        shape = (max(1, int(win.height / max(scale, 1.0))),
                 max(1, int(win.width / max(scale, 1.0))))
        uniq = sorted(set(bands))
        data = ds.read(uniq, window=win, out_shape=(len(uniq),) + shape, masked=True)
        ranges = []
        for b in bands:
            band = data[uniq.index(b)]
            vals = band.compressed() if np.ma.isMaskedArray(band) else band.ravel()
            vals = vals[np.isfinite(vals)]
            if vals.size == 0:
                raise InputError("no valid pixel in the extent to stretch the values "
                                 "from: give min/max values or another extent",
                                 field="stretch")
            a, c = np.percentile(vals, [low, high])
            ranges.append((float(a), float(c) if c > a else float(a) + 1.0))
    info["ranges"] = [[round(a, 6), round(b, 6)] for a, b in ranges]
    return ranges, info


def rasterio_window_full(ds):
    """The window of the whole dataset."""
    from rasterio.windows import Window
    return Window(0, 0, ds.width, ds.height)


def to_uint8(img: np.ndarray, ranges: Optional[Sequence[Tuple[float, float]]]
             ) -> np.ndarray:
    """Bands ``(B, H, W)`` of any numeric dtype as uint8 for the model: each band
    linearly from its ``(low, high)`` to 0-255, clipped; ``ranges`` None: the values
    must already be 8-bit and are returned unchanged."""
    if ranges is None:
        return img
    out = np.empty(img.shape, np.uint8)
    for i, (lo, hi) in enumerate(ranges):
        v = (img[i].astype(np.float32) - lo) * (255.0 / (hi - lo))
        out[i] = np.clip(np.rint(v), 0, 255).astype(np.uint8)
    return out


def alpha_band(ds) -> Optional[int]:
    """1-based index of the raster's alpha band, or None."""
    from rasterio.enums import ColorInterp
    for i, ci in enumerate(ds.colorinterp, start=1):
        if ci == ColorInterp.alpha:
            return i
    return None

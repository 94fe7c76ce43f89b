"""The report's figures, drawn with matplotlib's object API (no pyplot: no global state,
safe in the engine's worker threads) and returned as PNG bytes.

* :func:`map_png`: the installations over the buildings and zones, with a scale bar
  and grid north; where the installations are too small to see at the map's scale
  (spread over several sites), a dot marks each one and close-ups of the largest sites
  follow.
* :func:`size_histogram_png`: installations by outline area.
* :func:`azimuth_rose_png`: installations by long-axis azimuth from true north; an axis
  has no direction, so each one counts at its azimuth and at azimuth + 180°.
"""

from __future__ import annotations

import io
import math
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import shapely

#: Colours: installations (orange, as the plugin's result layers), their outline,
#: buildings, zones, and the bars of the charts.
PANEL, PANEL_EDGE, BUILDING, BUILDING_EDGE = "#f28e2b", "#9c4f00", "#dcdcdc", "#8a8a8a"
ZONE_EDGE, BAR = "#3c6e9f", "#4e79a7"
#: Resolution of every figure, dots per inch.
DPI = 110
#: Most close-ups of sites under a map whose installations are too small to see.
CLOSE_UPS = 4


def _figure(width_in: float, height_in: float):
    from matplotlib.figure import Figure
    return Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
    return buf.getvalue()


def _rings(geom: Any) -> List[np.ndarray]:
    """The exterior rings of a Polygon / MultiPolygon, as (n, 2) arrays."""
    return [np.asarray(p.exterior.coords) for p in shapely.get_parts(geom)
            if p.geom_type == "Polygon"]


def _draw(ax: Any, geoms: Iterable[Any], face: str, edge: str, width: float,
          style: str = "-", z: int = 1) -> None:
    from matplotlib.collections import PolyCollection
    rings = [r for g in geoms for r in _rings(g)]
    if rings:
        ax.add_collection(PolyCollection(rings, facecolors=face, edgecolors=edge,
                                         linewidths=width, linestyles=style, zorder=z))


def _nice_length(span_m: float) -> float:
    """A round scale-bar length (1, 2 or 5 × 10^n m) of about a fifth of ``span_m``."""
    target = max(span_m / 5.0, 1e-3)
    power = 10.0 ** math.floor(math.log10(target))
    return max(m * power for m in (1.0, 2.0, 5.0) if m * power <= target)


def _scale_and_north(ax: Any, box: Box, north: bool = True) -> None:
    """A scale bar in the lower left of ``box`` and, with ``north``, a grid-north
    arrow in the upper right."""
    x0, y0, x1, y1 = box
    length = _nice_length(x1 - x0)
    bx, by = x0 + 0.04 * (x1 - x0), y0 + 0.05 * (y1 - y0)
    ax.plot([bx, bx + length], [by, by], color="black", lw=3, solid_capstyle="butt")
    label = f"{length / 1000:g} km" if length >= 1000 else f"{length:g} m"
    ax.text(bx + length / 2, by + 0.02 * (y1 - y0), label, ha="center", va="bottom",
            fontsize=8)
    if north:
        ax.annotate("N", xy=(0.96, 0.95), xytext=(0.96, 0.80), xycoords="axes fraction",
                    ha="center", va="center", fontsize=9, fontweight="bold",
                    arrowprops={"arrowstyle": "-|>", "color": "black"})


Box = Tuple[float, float, float, float]


def _frame(geoms: Sequence[Any], ratio: float, pad_share: float = 0.06,
           least_m: float = 10.0) -> Box:
    """The bounds of ``geoms`` padded by ``pad_share`` of their larger side (at least
    ``least_m`` metres of side) and widened to height / width = ``ratio``."""
    x0, y0, x1, y1 = shapely.total_bounds(np.asarray(geoms, dtype=object))
    pad = pad_share * max(x1 - x0, y1 - y0, least_m)
    x0, y0, x1, y1 = x0 - pad, y0 - pad, x1 + pad, y1 + pad
    gx = max(0.0, (y1 - y0) / ratio - (x1 - x0)) / 2
    gy = max(0.0, (x1 - x0) * ratio - (y1 - y0)) / 2
    return x0 - gx, y0 - gy, x1 + gx, y1 + gy


def sites(geoms: Sequence[Any], gap_m: float) -> List[List[int]]:
    """Installations grouped into sites: those closer than ``gap_m`` to each other (in
    a chain) share one; sites by decreasing panel area."""
    arr = np.asarray(geoms, dtype=object)
    blobs = list(shapely.get_parts(shapely.union_all(shapely.buffer(arr, gap_m / 2))))
    which = shapely.STRtree(blobs).query(shapely.centroid(arr), predicate="within")
    groups: Dict[int, List[int]] = {}
    for i, b in zip(*which):
        groups.setdefault(int(b), []).append(int(i))
    return sorted(groups.values(), key=lambda g: -sum(geoms[i].area for i in g))


def _panel(ax: Any, box: Box, layers: Dict[str, Sequence[Any]], zone_names: Sequence[str],
           dots: bool) -> None:
    """Draw zones (named when given ``zone_names``), buildings and installations (dots
    at their centroids with ``dots``) framed on ``box``."""
    _draw(ax, layers["zones"], "none", ZONE_EDGE, 1.2, "--", 1)
    _draw(ax, layers["buildings"], BUILDING, BUILDING_EDGE, 0.6, "-", 2)
    _draw(ax, layers["installations"], PANEL, PANEL_EDGE, 0.7, "-", 3)
    for g, name in zip(layers["zones"], zone_names):
        seen = g.intersection(shapely.box(*box))
        if not seen.is_empty:  # labelled inside the part of the zone on this panel
            p = seen.representative_point()
            ax.text(p.x, p.y, name, color=ZONE_EDGE, fontsize=8, ha="center",
                    clip_on=True)
    if dots and len(layers["installations"]):
        c = shapely.centroid(np.asarray(layers["installations"], dtype=object))
        ax.scatter(shapely.get_x(c), shapely.get_y(c), s=18, c=PANEL,
                   edgecolors=PANEL_EDGE, linewidths=0.6, zorder=4)
    ax.set_xlim(box[0], box[2])
    ax.set_ylim(box[1], box[3])
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])


def map_png(installations: Sequence[Any], buildings: Sequence[Any] = (),
            zones: Sequence[Any] = (), zone_names: Sequence[str] = ()) -> Tuple[bytes, int]:
    """A map of installation outlines (working CRS, metres) over buildings and zones,
    framed on the installations (on the buildings when there are none). When the
    installations are too small to see at that scale (sites far apart), dots mark them
    and up to :data:`CLOSE_UPS` close-ups of the largest sites follow, numbered on the
    overview.

    Returns:
        ``(PNG bytes, number of close-ups)``.
    """
    layers = {"installations": list(installations), "buildings": list(buildings),
              "zones": list(zones)}
    frame = layers["installations"] or layers["buildings"] or layers["zones"]
    if not frame:
        fig = _figure(7.0, 2.0)
        fig.text(0.5, 0.5, "no installations", ha="center", va="center")
        return _png(fig), 0
    x0, y0, x1, y1 = shapely.total_bounds(np.asarray(frame, dtype=object))
    span = max(x1 - x0, y1 - y0, 10.0)
    sizes = [max(g.bounds[2] - g.bounds[0], g.bounds[3] - g.bounds[1])
             for g in installations]
    groups = sites(installations, 0.05 * span) if sizes else []
    dots = bool(sizes) and float(np.median(sizes)) < 0.01 * span and len(groups) > 1
    if not dots:
        ratio = min(6.0 / 7.0, max(3.0 / 7.0, (y1 - y0) / max(x1 - x0, 1e-9)))
        fig = _figure(7.0, 7.0 * ratio)
        ax = fig.add_subplot()
        box = _frame(frame, ratio)
        _panel(ax, box, layers, zone_names, False)
        _scale_and_north(ax, box)
        return _png(fig), 0
    close = groups[:CLOSE_UPS]
    fig = _figure(7.0, 3.2 + 7.0 / len(close))
    grid = fig.add_gridspec(2, len(close), height_ratios=[3.0, 7.0 / len(close)])
    ax = fig.add_subplot(grid[0, :])
    box = _frame(frame, 3.0 / 7.0)
    _panel(ax, box, layers, zone_names, True)
    _scale_and_north(ax, box)
    for k, group in enumerate(close):
        sub = _frame([installations[i] for i in group], 1.0, 0.15, 20.0)
        ax.add_patch(_box_patch(sub))
        ax.text(sub[2], sub[3], f" {k + 1}", fontsize=9, fontweight="bold", va="bottom")
        inset = fig.add_subplot(grid[1, k])
        _panel(inset, sub, layers, (), False)  # names would cover the installations
        _scale_and_north(inset, sub, north=False)
        inset.set_title(f"{k + 1}", fontsize=9, fontweight="bold")
    return _png(fig), len(close)


def _box_patch(box: Box) -> Any:
    from matplotlib.patches import Rectangle
    return Rectangle((box[0], box[1]), box[2] - box[0], box[3] - box[1], fill=False,
                     edgecolor="black", linewidth=0.8, zorder=5)


def size_histogram_png(areas_m2: Sequence[float]) -> bytes:
    """A histogram (PNG) of installation areas, m²."""
    fig = _figure(4.6, 3.2)
    ax = fig.add_subplot()
    areas = np.asarray(areas_m2, dtype=float)
    if areas.size:
        bins = np.histogram_bin_edges(areas, bins=min(20, max(5, areas.size // 2)))
        ax.hist(areas, bins=bins, color=BAR, edgecolor="white")
    ax.set_xlabel("installation area (m²)")
    ax.set_ylabel("installations")
    ax.set_title("Sizes", fontsize=10)
    ax.yaxis.get_major_locator().set_params(integer=True)
    return _png(fig)


def azimuth_rose_png(azimuths_deg: Sequence[Optional[float]], bin_deg: float = 10.0
                     ) -> bytes:
    """A rose (PNG) of long-axis azimuths (degrees from true north, [0, 180); None are
    left out), in ``bin_deg`` sectors, mirrored to [180, 360)."""
    fig = _figure(4.0, 3.6)
    ax = fig.add_subplot(projection="polar")
    az = np.asarray([a for a in azimuths_deg if a is not None], dtype=float)
    edges = np.arange(0.0, 180.0 + bin_deg, bin_deg)
    counts, _ = np.histogram(az, bins=edges)
    theta = np.radians(np.concatenate([edges[:-1], edges[:-1] + 180.0]))
    ax.bar(theta, np.concatenate([counts, counts]), width=math.radians(bin_deg),
           align="edge", color=BAR, edgecolor="white", linewidth=0.6)
    ax.set_theta_zero_location("N")
    ax.set_theta_direction(-1)
    ax.set_thetagrids(range(0, 360, 45), ["N", "NE", "E", "SE", "S", "SW", "W", "NW"])
    top = int(counts.max()) if counts.size and counts.max() > 0 else 1
    ax.set_rticks(sorted({max(1, round(top * f)) for f in (0.5, 1.0)}))
    ax.tick_params(labelsize=8)
    ax.set_title("Long-axis azimuths", fontsize=10)
    return _png(fig)


__all__ = ["map_png", "size_histogram_png", "azimuth_rose_png"]

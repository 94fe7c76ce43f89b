"""The inventory's HTML report: one self-contained file (inline CSS, the figures as
base64 PNG ``data:`` URIs, no script, nothing fetched), readable offline and printable.

Sections: key figures, map, sizes and azimuths, totals per class, per building (and
the installations on no building), per zone, change between the dates, the
installations, and the assumptions, rules and model versions used.
"""

from __future__ import annotations

import base64
import html
from typing import Any, Iterable, List, Optional, Sequence

from protocol.inventory import ASSUMPTION_SOURCES

from . import figures
from .change import STATUSES, counts
from .inventory import Installation, Totals

#: Most installation rows the report lists (all of them are in the CSV).
MAX_LISTED = 300

_CSS = """
body{font-family:"DejaVu Sans",Helvetica,Arial,sans-serif;color:#222;margin:0;
 background:#f4f5f7}
main{max-width:1080px;margin:0 auto;padding:24px 32px;background:#fff}
h1{font-size:26px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;
 border-bottom:2px solid #f28e2b;padding-bottom:3px}
.sub{color:#666;font-size:13px;margin:0 0 14px}
.note{background:#fff4e5;border-left:4px solid #f28e2b;padding:8px 12px;font-size:13px}
.cards{display:flex;gap:12px;margin:14px 0}
.card{flex:1;background:#f7f9fc;border:1px solid #dde3ea;border-radius:6px;
 padding:10px 14px}
.card b{display:block;font-size:24px;color:#1f4e79}.card span{font-size:12px;color:#555}
.row{display:flex;gap:16px;align-items:flex-start;flex-wrap:wrap}
figure{margin:0}figcaption{font-size:12px;color:#555;max-width:520px}
img{max-width:100%;border:1px solid #e2e2e2}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{padding:3px 9px;border-bottom:1px solid #e6e6e6;text-align:left}
th{background:#eef2f6}td.n{text-align:right;font-variant-numeric:tabular-nums}
tr:nth-child(even) td{background:#fafbfc}
.small{font-size:12px;color:#555}
"""


def esc(value: Any) -> str:
    """HTML-escaped text of a value (None as an empty string)."""
    return "" if value is None else html.escape(str(value))


def num(value: Optional[float], digits: int = 1) -> str:
    """A number with thousands separators and ``digits`` decimals ("" for None)."""
    return "" if value is None else f"{value:,.{digits}f}"


def table(headers: Optional[Sequence[str]], rows: Iterable[Sequence[Any]],
          numeric: Sequence[int] = ()) -> str:
    """An HTML table (no header row when ``headers`` is None); cells are escaped,
    columns ``numeric`` right-aligned."""
    head = "" if headers is None else \
        "<tr>" + "".join(f"<th>{esc(h)}</th>" for h in headers) + "</tr>"
    body = "".join(
        "<tr>" + "".join(f"<td class='n'>{esc(c)}</td>" if i in numeric
                         else f"<td>{esc(c)}</td>" for i, c in enumerate(r)) + "</tr>"
        for r in rows)
    return f"<table>{head}{body}</table>"


def png_img(data: bytes, alt: str) -> str:
    """An ``<img>`` holding PNG ``data`` inline."""
    return (f"<img alt='{esc(alt)}' src='data:image/png;base64,"
            f"{base64.b64encode(data).decode('ascii')}'>")


def totals_row(t: Totals, label: Optional[str] = None) -> List[str]:
    """A table row of totals: label, installations, area, modules, kWp."""
    return [label if label is not None else t.key, str(t.installations), num(t.area_m2),
            str(t.modules), num(t.kwp, 2)]


TOTALS_HEAD = ("", "installations", "area (m²)", "modules (est.)", "capacity (kWp, est.)")


def cards(total: Totals) -> str:
    """The key figures."""
    items = [(str(total.installations), "installations"),
             (num(total.area_m2), "m² of panels (outline area)"),
             (str(total.modules), "modules (estimated)"),
             (num(total.kwp, 1), "kWp nominal capacity (estimated)")]
    return "<div class='cards'>" + "".join(
        f"<div class='card'><b>{esc(v)}</b><span>{esc(k)}</span></div>"
        for v, k in items) + "</div>"


def figures_section(r: Any) -> str:
    """The map, the size histogram and the azimuth rose, with captions."""
    insts = r.installations
    bld, zon = r.buildings, r.zones
    the_map, close_ups = figures.map_png([i.geom for i in insts], bld.geoms if bld else (),
                                         zon.geoms if zon else (), zon.names if zon else ())
    more = (f" Dots mark installations too small to see at the overview's scale; the "
            f"{close_ups} numbered frames are shown below it." if close_ups else "")
    flagged = {f: sum(1 for i in insts if i.flag == f) for f in ("irregular", "square")}
    with_az = sum(1 for i in insts if i.azimuth_deg is not None)
    return (
        "<h2>Map</h2><figure>" + png_img(the_map, "map of the installations")
        + f"<figcaption>Installations (orange) in {esc(r.crs.name)}"
        + (", buildings grey" if bld else "") + (", zones dashed blue" if zon else "")
        + f". The arrow points to grid north.{more}</figcaption></figure>"
        "<h2>Sizes and azimuths</h2><div class='row'><figure>"
        + png_img(figures.size_histogram_png([i.area_m2 for i in insts]), "sizes")
        + "</figure><figure>"
        + png_img(figures.azimuth_rose_png([i.azimuth_deg for i in insts]), "azimuths")
        + f"<figcaption>{with_az} installations with an azimuth (their rectangle's long "
        f"axis, degrees clockwise from true north; drawn at both ends). Without one: "
        f"{flagged['irregular']} not rectangular enough (rectangularity below "
        f"{r.params.min_rectangularity:g}), {flagged['square']} almost square (length / "
        f"width below {r.params.min_aspect:g}).</figcaption></figure></div>")


def places_section(places: Any, title: str, label: str) -> str:
    """Per building or per zone: the table, and the installations on none."""
    if places is None:
        return ""
    rows = [t for t in places.totals.values() if t.installations]
    empty = len(places.totals) - len(rows)
    held = (f"All {len(rows)} {places.role} hold installations." if not empty else
            f"{len(rows)} of {len(places.totals)} {places.role} hold installations; the "
            f"{empty} others are in the GeoPackage.")
    out = (f"<h2>{esc(title)}</h2><p class='small'>{esc(held)}</p>"
           + table((label,) + TOTALS_HEAD[1:], (totals_row(t) for t in rows),
                   (1, 2, 3, 4)))
    if places.outside:
        listed = ", ".join(f"#{i.inst_id} ({num(i.area_m2)} m²)" for i in places.outside)
        out += (f"<p><b>On no {esc(label)}</b>: {len(places.outside)} installations, "
                f"{num(sum(i.area_m2 for i in places.outside))} m², "
                f"{num(sum(i.kwp for i in places.outside), 1)} kWp.</p>"
                f"<p class='small'>{esc(listed)}</p>")
    return out


def change_section(r: Any) -> str:
    """Counts per status and the installations that changed."""
    if r.changes is None:
        return ""
    c = counts(r.changes)
    rows = [(s, c[s]["installations"], num(c[s]["delta_m2"])) for s in STATUSES]
    listed = [x for x in r.changes if x.status != "unchanged"]
    return (
        "<h2>Change since the earlier date</h2>"
        f"<p class='small'>Earlier layer: {esc(r.earlier_name)}. Matched one to one when "
        f"their intersection covers at least {r.params.match_overlap:g} of the smaller "
        f"outline; unchanged within {100 * r.params.area_tolerance:g} % or "
        f"{r.params.area_tolerance_m2:g} m².</p>"
        + table(("status", "installations", "area change (m²)"), rows, (1, 2))
        + table(("status", "installation", "earlier feature", "area before (m²)",
                 "area after (m²)", "change (m²)"),
                ((x.status, "" if x.after is None else r.installations[x.after].inst_id,
                  "" if x.before is None else r.earlier_fids[x.before],
                  num(x.area_before_m2), num(x.area_after_m2), num(x.delta_m2))
                 for x in listed), (1, 2, 3, 4, 5)))


def installations_section(insts: Sequence[Installation]) -> str:
    """The installations (the first :data:`MAX_LISTED`)."""
    rows = ((i.inst_id, i.cls, num(i.area_m2), num(i.length_m), num(i.width_m),
             num(i.rectangularity, 2), num(i.azimuth_deg, 0) or i.flag, i.modules,
             num(i.kwp, 2), num(i.score, 2), i.building or "", i.zone or "")
            for i in insts[:MAX_LISTED])
    more = (f"<p class='small'>The first {MAX_LISTED} of {len(insts)}; all are in the "
            f"CSV and the GeoPackage.</p>" if len(insts) > MAX_LISTED else "")
    return ("<h2>Installations</h2>" + more + table(
        ("#", "class", "area (m²)", "length (m)", "width (m)", "rectangularity",
         "azimuth (°)", "modules", "kWp", "score", "building", "zone"), rows,
        (0, 2, 3, 4, 5, 6, 7, 8, 9)))


def assumptions_section(r: Any) -> str:
    """The assumptions with their sources, the rules, and the models used."""
    a = r.params.assumptions
    units = {"module_area_m2": "m²", "power_w_m2": "W/m²", "packing_factor": "",
             "tilt_deg": "°"}
    rows = [(k, f"{v:g} {units[k]}".strip(), ASSUMPTION_SOURCES[k])
            for k, v in a.to_wire().items()]
    p = r.params
    rules = [("min_rectangularity", f"{p.min_rectangularity:g}",
              "below it an outline gets no azimuth (flag irregular)"),
             ("min_aspect", f"{p.min_aspect:g}",
              "rectangle length / width below it: no azimuth (flag square)"),
             ("match_overlap", f"{p.match_overlap:g}",
              "two dates' installations pair when their intersection covers this share "
              "of the smaller one (one to one, largest intersection first)"),
             ("area_tolerance", f"{100 * p.area_tolerance:g} % or "
              f"{p.area_tolerance_m2:g} m²", "a pair within it is unchanged, else grown "
              "or shrunk")]
    models = ", ".join(f"{m} {v} ({n} installations)" for (m, v), n in r.models.items())
    return (
        "<h2>Assumptions and sources</h2>"
        "<p class='small'>module area = outline area × packing factor / cos(tilt); "
        "modules = module area / area of one module, rounded; kWp = module area × W/m² "
        "/ 1000. Outline areas are planar, in the working CRS.</p>"
        + table(("assumption", "value", "source"), rows)
        + "<h2>Rules</h2>" + table(("rule", "value", "meaning"), rules)
        + "<h2>Models and inputs</h2>"
        + table(None, [("models", models or "not recorded in the layer"),
                           ("detections", r.inputs.get("detections", "")),
                           ("buildings", r.inputs.get("buildings", "not given")),
                           ("zones", r.inputs.get("zones", "not given")),
                           ("earlier detections", r.inputs.get("earlier", "not given")),
                           ("working CRS", f"{r.crs.name} ({r.crs.to_string()})")]))


def html_report(r: Any) -> str:
    """The whole report of an ``backend.reports.job.InventoryResult``, as HTML text."""
    title = r.params.title or "Solar inventory"
    note = f"<p class='note'>{esc(r.crs_note)}</p>" if r.crs_note else ""
    warn = "".join(f"<p class='note'>{esc(w)}</p>" for w in r.warnings)
    per_class = table(("class",) + TOTALS_HEAD[1:],
                      [totals_row(t, t.key or "(no class)") for t in r.per_class.values()]
                      + [totals_row(r.total, "all")], (1, 2, 3, 4))
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body><main>"
        f"<h1>{esc(title)}</h1><p class='sub'>Made {esc(r.created)} by Ortholens "
        f"{esc(r.version)} from {esc(r.inputs.get('detections', ''))}.</p>"
        + note + warn + cards(r.total) + figures_section(r)
        + "<h2>Totals per class</h2>" + per_class
        + places_section(r.buildings, "Per building", "building")
        + places_section(r.zones, "Per zone", "zone")
        + change_section(r) + installations_section(r.installations)
        + assumptions_section(r) + "</main></body></html>")


__all__ = ["MAX_LISTED", "html_report", "table", "num", "esc"]

"""How result layers look: each class in its model card's colour, and a project's 2nd,
3rd... result layer outlined in a colour of its own so that a new result does not look
like the one below it. Polygons the user deleted in a review are not drawn (they stay
in the layer: they teach the model what is not an object); candidate misses are drawn
with a dashed outline and no fill (:data:`HIDDEN_WHEN`, :data:`DASHED_WHEN`)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from qgis.PyQt.QtGui import QColor
from qgis.core import (QgsCategorizedSymbolRenderer, QgsFillSymbol, QgsProperty,
                       QgsRendererCategory, QgsSymbolLayer)

#: Fill opacity of the class colour (0..255); outlines are opaque.
FILL_ALPHA = 90
#: The colour of a class without one, and of a class the card does not list.
FALLBACK_COLOR = "#e31a1c"

#: Outline colours of a project's 2nd, 3rd... result layers, in turn (a qualitative
#: palette); the 1st keeps its classes' own colours. Entries close to a class colour
#: are skipped, so the class fill stays recognisable.
RUN_OUTLINES = ("#1f78b4", "#e7298a", "#33a02c", "#6a3d9a", "#17becf", "#b15928")

#: Expression true for a polygon that is drawn (not deleted in a review); a layer
#: without the ``review`` field draws everything.
HIDDEN_WHEN = "coalesce(attribute('review'), '') <> 'deleted'"
#: Expression of the outline style: dashed for a candidate miss still to review.
DASHED_WHEN = ("CASE WHEN coalesce(attribute('origin'), '') = 'candidate' AND "
               "coalesce(attribute('review'), 'pending') = 'pending' "
               "THEN 'dash' ELSE 'solid' END")
#: Fill of a candidate miss still to review: none (only its dashed outline).
FILL_WHEN = ("CASE WHEN coalesce(attribute('origin'), '') = 'candidate' AND "
             "coalesce(attribute('review'), 'pending') = 'pending' "
             "THEN 'no' ELSE 'solid' END")


def class_renderer(classes: List[Dict[str, Any]],
                   present: Optional[List[str]] = None,
                   outline: Optional[str] = None) -> QgsCategorizedSymbolRenderer:
    """A renderer categorized on ``class`` with each class's card colour.

    Args:
        classes: the model card's ``classes`` (``{"id", "name", "color": "#rrggbb"}``).
        present: class names found in the data that the card does not list; they get a
            red fallback colour so nothing is invisible.
        outline: ``#rrggbb`` outline colour of every class (a run's colour, see
            :func:`run_outline`); default: each class's own colour.

    Returns:
        The renderer: class colour fill, semi-transparent (alpha :data:`FILL_ALPHA`);
        opaque 0.6 mm outline.
    """
    cats = []
    names = []
    for c in classes:
        names.append(str(c["name"]))
        cats.append(_category(str(c["name"]), str(c.get("color") or FALLBACK_COLOR), outline))
    for name in present or []:
        if name not in names:
            names.append(name)
            cats.append(_category(name, FALLBACK_COLOR, outline))
    return QgsCategorizedSymbolRenderer("class", cats)


def _color(text: Optional[str], default: str = FALLBACK_COLOR) -> QColor:
    qc = QColor(text or default)
    return qc if qc.isValid() else QColor(default)


def _category(name: str, color: str, outline: Optional[str] = None) -> QgsRendererCategory:
    qc = _color(color)
    oc = _color(outline, qc.name())
    symbol = QgsFillSymbol.createSimple({
        "color": f"{qc.red()},{qc.green()},{qc.blue()},{FILL_ALPHA}",
        "outline_color": f"{oc.red()},{oc.green()},{oc.blue()},255",
        "outline_width": "0.6",
        "outline_width_unit": "MM",
    })
    layer = symbol.symbolLayer(0)
    layer.setDataDefinedProperty(QgsSymbolLayer.PropertyLayerEnabled,
                                 QgsProperty.fromExpression(HIDDEN_WHEN))
    layer.setDataDefinedProperty(QgsSymbolLayer.PropertyStrokeStyle,
                                 QgsProperty.fromExpression(DASHED_WHEN))
    layer.setDataDefinedProperty(QgsSymbolLayer.PropertyFillStyle,
                                 QgsProperty.fromExpression(FILL_WHEN))
    return QgsRendererCategory(name, symbol, name)


def run_outline(run: int, classes: List[Dict[str, Any]]) -> Optional[str]:
    """The outline colour of a project's ``run``-th result layer.

    Args:
        run: the run number, 1.. (see :func:`~.naming.next_result_run`).
        classes: the model card's classes.

    Returns:
        None for run 1 (each class keeps its own colour); otherwise ``#rrggbb`` from
        :data:`RUN_OUTLINES` in turn (run 2 the first), leaving out colours close to a
        class colour (RGB distance below 120 of 441), so runs look different while
        the class fill stays recognisable.
    """
    if run <= 1:
        return None
    own = [_color(str(c.get("color") or FALLBACK_COLOR)) for c in classes]

    def far(hex_color: str) -> bool:
        q = QColor(hex_color)
        return all(((q.red() - c.red()) ** 2 + (q.green() - c.green()) ** 2
                    + (q.blue() - c.blue()) ** 2) ** 0.5 >= 120 for c in own)

    palette = [c for c in RUN_OUTLINES if far(c)] or list(RUN_OUTLINES)
    return palette[(run - 2) % len(palette)]


__all__ = ["FILL_ALPHA", "FALLBACK_COLOR", "RUN_OUTLINES", "HIDDEN_WHEN", "DASHED_WHEN",
           "FILL_WHEN", "class_renderer", "run_outline"]

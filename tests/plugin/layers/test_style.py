"""How result layers look: each run's outline colour."""

from __future__ import annotations

from qgis.PyQt.QtGui import QColor

from plugin.layers.style import RUN_OUTLINES, run_outline


def test_run_outlines_avoid_the_class_colours():
    def dist(a, b):
        qa, qb = QColor(a), QColor(b)
        return ((qa.red() - qb.red()) ** 2 + (qa.green() - qb.green()) ** 2
                + (qa.blue() - qb.blue()) ** 2) ** 0.5

    for color in (RUN_OUTLINES[0], "#ff7f0e"):
        classes = [{"id": 1, "name": "c", "color": color}]
        assert run_outline(1, classes) is None  # run 1: the class's own colour
        cycle = [run_outline(run, classes) for run in range(2, 2 + len(RUN_OUTLINES))]
        assert all(dist(c, color) >= 120 for c in cycle), cycle
        kept = sorted(set(cycle))
        assert len(kept) >= 3 and cycle[:len(kept)] == [c for c in RUN_OUTLINES if c in kept]

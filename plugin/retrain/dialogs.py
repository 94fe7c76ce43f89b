"""The retrain dialogs: budget and options before, the outcome after.

The result window is compact: one sentence saying what was decided and the main
reason, a small before/after table, then a few short notes (the time taken against the
budget, what the daemon found in the corrections, warnings).
"""

from __future__ import annotations

import html
from typing import Any, Callable, Dict, List, Optional, Tuple

from qgis.PyQt.QtGui import QTextDocument
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QSpinBox,
    QVBoxLayout,
)

from ..cards import base_id
from .plan import RetrainPlan

#: What the time budget covers, as the dialog says it.
BUDGET_COVERS = ("the whole retrain: preparing your corrections, training, checking the "
                 "new version and saving it (training gets what the rest leaves)")
#: Smallest measured surface, km², over which a per-km² rate is shown.
MIN_RATE_KM2 = 1.0
#: The daemon's default reach of an area version beyond the reviewed extents.
SITE_MARGIN_TEXT = "250 m"
#: The rule of each scope, as the retrain dialog says it.
RULES = {
    "area": ("The new version is judged on the part of your corrections it is not "
             "trained on: it is kept when it makes fewer mistakes there, by more than "
             "chance, and then used only in this area. How it does on the reference "
             "tiles is measured and shown, not required. With too few corrected "
             "objects held out there is no verdict; you decide."),
    "general": ("The new version is kept only if it does not get worse on the part of "
                "your corrections it was not trained on, nor on reference validation "
                "tiles it never trained on, and has learned from your corrections; "
                "otherwise you are told why."),
}


class RetrainDialog(QDialog):
    """Budget and options of a retrain, with what will be used.

    Args:
        plan: what the retrain will send (the model, the user's edits and the reviewed
            area are shown).
        parent: the parent widget.
        has_view_option: offer "only its part in the current map view".

    After ``exec_()`` / ``accept()``: :meth:`budget_s`, :meth:`options`,
    :meth:`use_view_only`.
    """

    def __init__(self, plan: RetrainPlan, parent=None, has_view_option: bool = True):
        super().__init__(parent)
        self.setObjectName("OrtholensRetrainDialog")
        self.setWindowTitle("Ortholens: retrain on corrections")
        self.plan = plan
        lay = QVBoxLayout(self)
        other = (f"<br><i>The layer was detected with {html.escape(plan.detected_model)};"
                 f" {html.escape(plan.model)} is the model selected in the dock.</i>"
                 if plan.detected_model and base_id(plan.detected_model) != base_id(plan.model)
                 else "")
        self.head_label = QLabel(f"Fine-tune <b>{html.escape(plan.model)}</b> from its "
                                 f"current weights on your corrections in "
                                 f"<b>{html.escape(plan.layer_name)}</b>.{other}", self)
        self.head_label.setObjectName("ortholensRetrainHead")
        self.head_label.setWordWrap(True)
        lay.addWidget(self.head_label)
        self.summary_label = QLabel(plan.summary() + ("<br>" + " ".join(plan.notes)
                                                      if plan.notes else ""), self)
        self.summary_label.setObjectName("ortholensRetrainSummary")
        self.summary_label.setWordWrap(True)
        lay.addWidget(self.summary_label)
        self.holdout_label = QLabel(plan.holdout_warning(), self)
        self.holdout_label.setObjectName("ortholensRetrainHoldoutWarning")
        self.holdout_label.setWordWrap(True)
        self.holdout_label.setStyleSheet("color: #9a6700;")
        self.holdout_label.setVisible(bool(self.holdout_label.text()))
        lay.addWidget(self.holdout_label)
        form = QFormLayout()
        self.budget_spin = QSpinBox(self)
        self.budget_spin.setObjectName("ortholensRetrainBudget")
        self.budget_spin.setRange(1, 120)
        self.budget_spin.setValue(2)
        self.budget_spin.setSuffix(" min")
        self.budget_spin.setToolTip(f"Time budget of {BUDGET_COVERS}")
        form.addRow("Time budget", self.budget_spin)
        self.budget_note = QLabel(f"<small>Covers {BUDGET_COVERS}.</small>", self)
        self.budget_note.setObjectName("ortholensRetrainBudgetNote")
        self.budget_note.setWordWrap(True)
        form.addRow("", self.budget_note)
        self.area_combo = QComboBox(self)
        self.area_combo.addItem("the whole detection extent", False)
        if has_view_option:
            self.area_combo.addItem("only its part in the current map view", True)
        form.addRow("Reviewed area", self.area_combo)
        self.mode_combo = QComboBox(self)
        self.mode_combo.setObjectName("ortholensRetrainMode")
        self.mode_combo.addItem("only what I reviewed (and 2 m around it)", "review")
        self.mode_combo.addItem("the whole reviewed area (what no polygon covers is "
                                "background)", "extent")
        self.mode_combo.setCurrentIndex(0 if plan.mode == "review" else 1)
        self.mode_combo.setToolTip(
            "Only what I reviewed: the polygons you accepted, edited, added or deleted "
            "teach the model, the rest is ignored. The whole area: you vouch for every "
            "polygon in it, and for every object being one.")
        self.mode_combo.currentIndexChanged.connect(
            lambda *_: self.summary_label.setText(plan.summary(self.mode_combo.currentData()) + (
                "<br>" + " ".join(plan.notes) if plan.notes else "")))
        form.addRow("Teach from", self.mode_combo)
        self.invalid_combo = QComboBox(self)
        self.invalid_combo.addItem("repair them (make valid) and warn", "repair")
        self.invalid_combo.addItem("refuse the retrain", "refuse")
        form.addRow("Invalid geometries", self.invalid_combo)
        self.scope_combo = QComboBox(self)
        self.scope_combo.setObjectName("ortholensRetrainScope")
        self.scope_combo.addItem("this area (used only where you corrected)", "area")
        self.scope_combo.addItem("everywhere (general-purpose)", "general")
        self.scope_combo.setToolTip(
            "This area: the new version is used by detections inside the reviewed extents "
            f"and about {SITE_MARGIN_TEXT} around them, the model as before elsewhere. "
            "Everywhere: it replaces the model for every detection, so it must also not "
            "get worse on the reference tiles the model was validated on.")
        self.scope_combo.currentIndexChanged.connect(self._scope_changed)
        form.addRow("New version for", self.scope_combo)
        self.activate_check = QCheckBox("Use the new version for the next detection", self)
        self.activate_check.setChecked(True)
        form.addRow("", self.activate_check)
        lay.addLayout(form)
        self.rule_label = QLabel(self)
        self.rule_label.setObjectName("ortholensRetrainRule")
        self.rule_label.setWordWrap(True)
        lay.addWidget(self.rule_label)
        self._scope_changed()
        self.buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel, self)
        self.buttons.button(QDialogButtonBox.Ok).setText("Retrain")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        lay.addWidget(self.buttons)

    def _scope_changed(self, *_: Any) -> None:
        """Say the rule of the chosen scope (:data:`RULES`)."""
        self.rule_label.setText(RULES[self.scope_combo.currentData()])

    def budget_s(self) -> float:
        """The time budget of the whole retrain, seconds."""
        return float(self.budget_spin.value() * 60)

    def use_view_only(self) -> bool:
        """True: only the part of the detection extent in the map view is reviewed."""
        return bool(self.area_combo.currentData())

    def options(self) -> Dict[str, Any]:
        """``invalid_geometry``, ``activate``, ``scope`` and ``mode`` of the
        :class:`~protocol.params.RetrainParams`."""
        return {"invalid_geometry": self.invalid_combo.currentData(),
                "activate": self.activate_check.isChecked(),
                "scope": self.scope_combo.currentData(),
                "mode": self.mode_combo.currentData()}


# ----------------------------------------------------------------------------- result

def main_reason(report: Dict[str, Any]) -> str:
    """The first (main) reason of a retrain report's ``reason`` (the daemon joins
    several with ``"; "``), arrows as ``→``; ``""`` when there is none."""
    reason = str(report.get("reason") or "").split("; ")[0].strip()
    return reason.replace(" -> ", " → ")


def verdict(report: Dict[str, Any]) -> str:
    """One sentence: what was decided and why (the main reason, once).

    Args:
        report: the daemon's retrain report (``accepted``, ``model``, ``active``,
            ``reason``).
    """
    why = main_reason(report)
    why = f": {why}" if why else ""
    if report.get("accepted"):
        if report.get("scope"):
            where = (" and used in this area" if report.get("in_use") else
                     " for this area (not in use yet)")
            return f"New version {report.get('model')} kept{where}{why}."
        active = " and made active" if report.get("active") == report.get("model") else ""
        return f"New version {report.get('model')} kept{active}{why}."
    if report.get("verdict") == "undecided":
        return f"No verdict, no new version kept yet{why}."
    return f"Rejected, no new version kept{why}."


def holdout_empty(report: Dict[str, Any]) -> bool:
    """True when the held-out part of the corrections held none of the user's
    polygons (object F1 and IoU cannot be measured there)."""
    held = ((report.get("corrections") or {}).get("holdout") or {})
    if isinstance(held.get("features"), int):
        return held["features"] == 0
    before = ((report.get("before") or {}).get("user_holdout") or {})
    return before.get("objects_true") == 0


def _ratio(v: Any) -> str:
    return "n/a" if v is None else f"{float(v):.3f}"


def _count(v: Any) -> str:
    return "n/a" if v is None else str(int(v))


def _rate(v: Any) -> str:
    if v is None:
        return "n/a"
    return f"{float(v):.1f}" if float(v) < 10 else f"{float(v):.0f}"


#: Parts of a report's metrics, as the table names them.
PARTS = (("user_holdout", "held-out part of your corrections"),
         ("user_train", "your corrections trained on"),
         ("guard", "reference tiles (pv01 validation)"))


def result_rows(report: Dict[str, Any]) -> List[Tuple[str, str, str, str]]:
    """The before/after table: ``(measured on, metric, before, after)`` rows.

    Ratios (object F1, pixel IoU) have 3 decimals, counts none; false polygons per km²
    appear only over at least :data:`MIN_RATE_KM2` (a rate over a few hundred m² would
    mean nothing); F1 and IoU of a held-out part without polygons are left out
    (:func:`holdout_empty`); a value that could not be measured reads ``n/a``.
    """
    b, a = report.get("before") or {}, report.get("after") or {}
    empty = holdout_empty(report)
    rows = []
    for key, label in PARTS:
        if key not in b or key not in a:
            continue
        mb, ma = b[key] or {}, a[key] or {}
        area = max(float(mb.get("area_km2") or 0.0), float(ma.get("area_km2") or 0.0))
        metrics = [("object_errors", "object errors", _count),
                   ("false_objects", "false polygons", _count)]
        if not (key == "user_holdout" and empty):
            metrics = [("object_f1", "object F1", _ratio)] + metrics + \
                [("pixel_iou", "pixel IoU", _ratio)]
        if area >= MIN_RATE_KM2:
            metrics.append(("false_polygons_per_km2", "false polygons / km²", _rate))
        for m, name, fmt in metrics:
            if mb.get(m) is None and ma.get(m) is None:
                continue
            rows.append((label, name, fmt(mb.get(m)), fmt(ma.get(m))))
        if key == "user_holdout":
            rows += _change_rows(report.get("change") or {}, label)
    return rows


def _change_rows(change: Dict[str, Any], label: str) -> List[Tuple[str, str, str, str]]:
    """The held-out change's uncertainty as a row: ``(label, "object F1 change", "",
    "+0.298 (90 % interval +0.18 to +0.41, 52 objects)")``; none without one."""
    lo, hi = (change.get("f1_interval") or [None, None])[:2]
    if change.get("f1_change") is None or lo is None or hi is None:
        return []
    conf = float(change.get("confidence") or 0.9)
    return [(label, "object F1 change", "",
             f"{float(change['f1_change']):+.3f} ({conf:.0%} interval {float(lo):+.3f} to "
             f"{float(hi):+.3f}, {int(change.get('objects') or 0)} objects)")]


def scope_text(scope: Optional[Dict[str, Any]]) -> str:
    """``"0.27 km² around 32.5129° N, 120.4246° E (11 reviewed extents + 250 m)"`` of
    a version's ``scope`` (the daemon's ``backend.models.area.Area`` JSON); ``""``
    for none."""
    if not isinstance(scope, dict):
        return ""
    lon, lat = (list(scope.get("centre") or [0.0, 0.0]) + [0.0, 0.0])[:2]
    n = len(scope.get("reviewed") or [])
    return (f"{float(scope.get('area_km2') or 0.0):.2f} km² around {abs(lat):.4f}° "
            f"{'N' if lat >= 0 else 'S'}, {abs(lon):.4f}° {'E' if lon >= 0 else 'W'} "
            f"({n} reviewed extent{'s' if n != 1 else ''} + "
            f"{float(scope.get('margin_m') or 0.0):g} m)")


#: The phases of a retrain in the result window, with their keys in its ``time``.
PHASE_KEYS = (("preparing the data", "preparing_s"), ("training", "training_s"),
              ("checking", "checking_s"), ("saving", "saving_s"))


def result_notes(report: Dict[str, Any]) -> List[str]:
    """Short notes under the table: the held-out check that could not be made, the
    time against the budget and the time of each phase, what the daemon found in the
    corrections, up to three warnings."""
    notes = []
    if report.get("scope"):
        notes.append(f"Area of the new version: {scope_text(report['scope'])}; elsewhere "
                     f"detections use {report.get('parent')} as before.")
    if report.get("pending"):
        notes.append("The rule did not accept this version, but you may keep it: it is "
                     "then used in its area, and its record says that you kept it "
                     "against the rule's verdict.")
    if holdout_empty(report):
        km2 = (((report.get("before") or {}).get("user_holdout") or {}).get("area_km2"))
        where = f" ({float(km2):.3f} km²)" if isinstance(km2, (int, float)) else ""
        notes.append(f"Held-out check could not be made: the held-out part of your "
                     f"corrections{where} holds none of your polygons, so object F1 and "
                     f"IoU are not defined there; only polygons drawn there count as "
                     f"errors.")
    t, train = report.get("time") or {}, report.get("train") or {}
    budget = t.get("budget_s", report.get("budget_s"))
    steps = f", {train['steps']} steps" if isinstance(train.get("steps"), int) else ""
    if isinstance(t.get("seconds"), (int, float)) and isinstance(budget, (int, float)):
        within = t.get("within_budget", t["seconds"] <= budget)
        of = "of the" if within else "— over the"
        advice = "" if within else "; give a larger budget or review a smaller area"
        notes.append(f"Took {t['seconds']:.0f} s {of} {budget:.0f} s budget "
                     f"({t.get('training_s') or train.get('seconds') or 0:.0f} s "
                     f"training{steps}){advice}.")
        phases = [(name, t.get(key)) for name, key in PHASE_KEYS
                  if isinstance(t.get(key), (int, float))]
        if "preparing_s" in t:
            notes.append("Phases: " + ", ".join(f"{n} {v:.0f} s" for n, v in phases) + ".")
    elif isinstance(train.get("seconds"), (int, float)):
        notes.append(f"Trained {train['seconds']:.0f} s{steps}.")
    found = _found(report.get("corrections") or {})
    if found:
        notes.append(found)
    timed = any(n.startswith("Took ") for n in notes)
    warnings = [str(w) for w in report.get("warnings") or []
                if not (timed and "budget" in str(w))]  # the time note says it already
    for w in warnings[:3]:
        notes.append(w[:1].upper() + w[1:] + ("" if w.endswith(".") else "."))
    return notes


def _found(corr: Dict[str, Any]) -> Optional[str]:
    """``"Compared with the model's own detections, your corrections delete 1 object,
    add 1 and reclassify 0."`` from the daemon's corrections summary."""
    parts = [corr.get(k) or {} for k in ("train", "holdout")]
    if not any(parts):
        return None

    def total(key: str) -> int:
        return int(sum(int(p.get(key) or 0) for p in parts))
    d, a, c = total("deleted"), total("added"), total("class_change_objects")
    return (f"Compared with the model's own detection, your corrections delete {d} "
            f"object{'s' if d != 1 else ''}, add {a} and reclassify {c}.")


def report_html(report: Dict[str, Any]) -> str:
    """A retrain report as HTML: :func:`verdict`, the :func:`result_rows` table and the
    :func:`result_notes`."""
    rows = "".join(f"<tr><td>{html.escape(p)}</td><td>{html.escape(m)}</td>"
                   f"<td align='right'>{b}</td><td align='right'>{a}</td></tr>"
                   for p, m, b, a in result_rows(report))
    table = ("<table border='1' cellpadding='3' cellspacing='0'><tr><th>measured on</th>"
             "<th>metric</th><th>before</th><th>after</th></tr>" + rows + "</table>"
             if rows else "")
    notes = "".join(f"<p><small>{html.escape(n)}</small></p>" for n in result_notes(report))
    return f"<p><b>{html.escape(verdict(report))}</b></p>{table}{notes}"


class RetrainResultDialog(QDialog):
    """Non-modal window with a retrain's outcome: :func:`verdict`, the before/after
    table and short notes; the acceptance rule is the sentence's tooltip. When the
    rule did not accept the candidate and the daemon kept it aside (``pending``),
    **Keep this version anyway** calls ``on_keep(pending)`` and closes the window.

    Args:
        report: the daemon's retrain report (``result["retrain"]``).
        parent: the parent widget.
        on_keep: called with the report's ``pending`` when the user keeps the version.
    """

    def __init__(self, report: Dict[str, Any], parent=None,
                 on_keep: Optional[Callable[[str], None]] = None):
        super().__init__(parent)
        self.setObjectName("OrtholensRetrainResult")
        self.setWindowTitle("Ortholens: retrain result")
        self.report = report
        lay = QVBoxLayout(self)
        self.label = QLabel(report_html(report), self)
        self.label.setObjectName("ortholensRetrainResultText")
        self.label.setWordWrap(True)
        self.label.setToolTip(str(report.get("rule") or ""))
        lay.addWidget(self.label)
        box = QDialogButtonBox(QDialogButtonBox.Close, self)
        box.rejected.connect(self.close)
        self.keep_button = None
        if report.get("pending") and on_keep is not None:
            self.keep_button = box.addButton("Keep this version anyway",
                                             QDialogButtonBox.ActionRole)
            self.keep_button.setObjectName("ortholensKeepButton")
            self.keep_button.setToolTip("Keep the new version although the rule did not "
                                        "accept it; its record says you chose to")
            pending = str(report["pending"])
            self.keep_button.clicked.connect(lambda *_: (on_keep(pending), self.close()))
        lay.addWidget(box)
        self.setMinimumWidth(480)
        self.adjustSize()
        # a word-wrapped label may under-report the height of a rich-text table: give
        # it the height its text takes at the width it got, so nothing is cut off
        lay.activate()
        doc = QTextDocument()
        doc.setDefaultFont(self.label.font())
        doc.setHtml(self.label.text())
        doc.setTextWidth(max(1, self.label.contentsRect().width()))
        self.label.setMinimumHeight(int(doc.size().height() + 0.5))
        self.adjustSize()

    def text(self) -> str:
        """The window's text, without markup."""
        doc = QTextDocument()
        doc.setHtml(self.label.text())
        return doc.toPlainText()


__all__ = ["BUDGET_COVERS", "RULES", "RetrainDialog", "main_reason", "verdict",
           "holdout_empty", "result_rows", "result_notes", "scope_text", "report_html",
           "RetrainResultDialog"]

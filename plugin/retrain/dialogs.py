"""The retrain dialogs: budget and options before, before/after metrics after."""

from __future__ import annotations

from typing import Any, Dict

from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QSpinBox,
    QTextBrowser,
    QVBoxLayout,
)

from .plan import RetrainPlan


class RetrainDialog(QDialog):
    """Budget and options of a retrain, with what will be used.

    Args:
        plan: what the retrain will send (its summary is shown).
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
        head = QLabel(f"Fine-tune <b>{plan.model}</b> from its current weights on the "
                      f"corrections in <b>{plan.layer_name}</b>.", self)
        head.setWordWrap(True)
        lay.addWidget(head)
        self.summary_label = QLabel(plan.summary() + ("<br>" + " ".join(plan.notes)
                                                      if plan.notes else ""), self)
        self.summary_label.setObjectName("ortholensRetrainSummary")
        self.summary_label.setWordWrap(True)
        lay.addWidget(self.summary_label)
        form = QFormLayout()
        self.budget_spin = QSpinBox(self)
        self.budget_spin.setObjectName("ortholensRetrainBudget")
        self.budget_spin.setRange(1, 120)
        self.budget_spin.setValue(2)
        self.budget_spin.setSuffix(" min")
        self.budget_spin.setToolTip("Training time; reading the corrections and checking "
                                    "the result come on top (about a minute on a CPU)")
        form.addRow("Training budget", self.budget_spin)
        self.area_combo = QComboBox(self)
        self.area_combo.addItem("the whole detection extent", False)
        if has_view_option:
            self.area_combo.addItem("only its part in the current map view", True)
        form.addRow("Reviewed area", self.area_combo)
        self.invalid_combo = QComboBox(self)
        self.invalid_combo.addItem("repair them (make valid) and warn", "repair")
        self.invalid_combo.addItem("refuse the retrain", "refuse")
        form.addRow("Invalid geometries", self.invalid_combo)
        self.activate_check = QCheckBox("Use the new version for the next detection", self)
        self.activate_check.setChecked(True)
        form.addRow("", self.activate_check)
        lay.addLayout(form)
        rule = QLabel("A new version is kept only if it does not get worse on the part "
                      "of your corrections it was not trained on, nor on reference "
                      "validation tiles it never trained on, and has learned from your "
                      "corrections; otherwise you are told why.", self)
        rule.setWordWrap(True)
        lay.addWidget(rule)
        self.buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel, self)
        self.buttons.button(QDialogButtonBox.Ok).setText("Retrain")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        lay.addWidget(self.buttons)

    def budget_s(self) -> float:
        """The training budget, seconds."""
        return float(self.budget_spin.value() * 60)

    def use_view_only(self) -> bool:
        """True: only the part of the detection extent in the map view is reviewed."""
        return bool(self.area_combo.currentData())

    def options(self) -> Dict[str, Any]:
        """``invalid_geometry`` and ``activate`` of the
        :class:`~protocol.params.RetrainParams`."""
        return {"invalid_geometry": self.invalid_combo.currentData(),
                "activate": self.activate_check.isChecked()}


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def report_html(report: Dict[str, Any]) -> str:
    """Before/after metrics of a retrain report (the daemon's ``result["retrain"]``)
    as HTML: the verdict, what was trained, a table and the warnings."""
    b, a = report.get("before") or {}, report.get("after") or {}
    rows = []
    parts = (("user_holdout", "your held-out corrections"),
             ("user_train", "your corrections it trained on"),
             ("guard", "reference validation tiles (pv01)"))
    for key, label in parts:
        if key not in b or key not in a:
            continue
        for m, name in (("object_f1", "object F1"), ("object_errors", "object errors"),
                        ("pixel_iou", "pixel IoU"),
                        ("false_polygons_per_km2", "false polygons / km²")):
            if b[key].get(m) is None and a[key].get(m) is None:
                continue
            rows.append(f"<tr><td>{label}</td><td>{name}</td><td>{_fmt(b[key].get(m))}</td>"
                        f"<td>{_fmt(a[key].get(m))}</td></tr>")
    verdict = (f"<b>New version {report.get('model')}</b>"
               + (" (now active)" if report.get("active") == report.get("model") else "")
               if report.get("accepted") else "<b>Rejected</b>: no new version was kept")
    train = report.get("train") or {}
    corr = report.get("corrections") or {}
    return (f"<p>{verdict}. {report.get('reason', '')}</p>"
            f"<p>Fine-tuned {report.get('parent')} for {train.get('seconds', '?')} s "
            f"({train.get('steps', '?')} steps, budget {report.get('budget_s', '?')} s) on "
            f"{corr.get('features', '?')} corrected features.</p>"
            "<table border='1' cellpadding='3' cellspacing='0'><tr><th>measured on</th>"
            "<th>metric</th><th>before</th><th>after</th></tr>" + "".join(rows) + "</table>"
            + "".join(f"<p><i>{w}</i></p>" for w in (report.get("warnings") or [])[:5])
            + f"<p><small>{report.get('rule', '')}</small></p>")


class RetrainResultDialog(QDialog):
    """Non-modal window with a retrain's before/after metrics (:func:`report_html`)."""

    def __init__(self, report: Dict[str, Any], parent=None):
        super().__init__(parent)
        self.setObjectName("OrtholensRetrainResult")
        self.setWindowTitle("Ortholens: retrain result")
        lay = QVBoxLayout(self)
        self.browser = QTextBrowser(self)
        self.browser.setHtml(report_html(report))
        lay.addWidget(self.browser)
        box = QDialogButtonBox(QDialogButtonBox.Close, self)
        box.rejected.connect(self.close)
        lay.addWidget(box)
        self.resize(560, 420)


__all__ = ["RetrainDialog", "report_html", "RetrainResultDialog"]

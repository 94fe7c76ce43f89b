"""The texts of the dock's versions panel, from the engine's ``versions`` reply (no
widgets): two lines per version of the lineage (date, parent, area, figures, verdict,
use), the line saying which version is in use
in the current map view and why, and why Delete cannot act.

The words: a version is **in use** where detections run it: the lineage's *active*
version wherever no version of one area is in use, a version taught on one area in
that area. The panel names the one **in use here**, in the map view.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Dict, Optional

#: What the Verdict column says of each decision of a version's lineage.
DECISIONS = {"shipped": "shipped", "accepted": "accepted by the rule",
             "kept by the user": "kept by you"}


def created_text(iso: Optional[str]) -> str:
    """``"2024-05-06 14:05"`` (local time) of an ISO 8601 time stamp; ``""`` for
    none."""
    if not iso:
        return ""
    try:
        return _dt.datetime.fromisoformat(str(iso)).astimezone().strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return str(iso)


def figures_text(v: Dict[str, Any]) -> str:
    """The figures of a version: the shipped model's object F1 on the pv01 held-out
    tiles, a retrained version's on the held-out part of its corrections, before ->
    after (``"0.593 → 0.866"``); ``""`` when not measured."""
    if v.get("number") == 0:
        f1 = (v.get("heldout") or {}).get("object_f1")
        return f"{float(f1):.3f} (pv01)" if isinstance(f1, (int, float)) else ""
    m = v.get("metrics") or {}
    before = ((m.get("before") or {}).get("user_holdout") or {}).get("object_f1")
    after = ((m.get("after") or {}).get("user_holdout") or {}).get("object_f1")
    if isinstance(before, (int, float)) and isinstance(after, (int, float)):
        return f"{float(before):.3f} → {float(after):.3f}"
    return "not measured"


def use_text(v: Dict[str, Any], here: Optional[str]) -> str:
    """How a version is used: a general version ``"active"`` (in use wherever no
    version of one area is) or ``"not active"``; a version of one area ``"in use in
    its area"`` or ``"not in use"``; the version in use in the map view says
    ``"in use here"`` first (a version of one area then only that: here is its area)."""
    if v.get("scope"):
        if here and v.get("id") == here:
            return "in use here (its area)"
        use = "in use in its area" if v.get("in_use") else "not in use"
    else:
        use = "active" if v.get("active") else "not active"
    return f"in use here; {use}" if here and v.get("id") == here else use


def version_lines(v: Dict[str, Any], here: Optional[str]) -> str:
    """The panel's two lines of a version of the ``versions`` reply; ``here``: the id
    of the version in use in the map view::

        pv-unet-efl0@1 v2.0.0+u1 — in use here (its area)
        2024-05-06 14:05 · from pv-unet-efl0 · 0.28 km² · held-out F1 0.593 → 0.866 ·
        accepted by the rule
    """
    scope = v.get("scope")
    area = (f"{float(scope.get('area_km2') or 0.0):.2f} km²" if isinstance(scope, dict)
            else "everywhere")
    figures = figures_text(v)
    decision = str(v.get("decision") or v.get("verdict") or "")
    verdict = DECISIONS.get(decision, decision)
    parts = [created_text(v.get("created")) or ("shipped" if v.get("number") == 0 else ""),
             f"from {v['parent']}" if v.get("parent") else "", area,
             f"held-out F1 {figures}" if figures and figures != "not measured" else figures,
             verdict if verdict != "shipped" else ""]
    return (f"{v.get('id')} v{v.get('version', '?')} — {use_text(v, here)}\n"
            + " · ".join(p for p in parts if p))


def here_line(reply: Dict[str, Any]) -> str:
    """``"In use here: pv-unet-efl0@1 — pv-unet-efl0@1 was taught on this area (…)"``
    from a ``versions`` reply with ``here``; ``""`` without it."""
    here = reply.get("here") or {}
    if not here.get("model"):
        return ""
    return f"In use here: {here['model']} — {here.get('why') or ''}".rstrip(" —")


def delete_why(v: Optional[Dict[str, Any]], busy: bool = False,
               switching: bool = False) -> Optional[str]:
    """Why Delete cannot act on version ``v`` (a row of the ``versions`` reply, or a
    card), or None when it can: nothing while a job runs or a version switch is on its
    way, and never a shipped model."""
    if busy:
        return "Wait until the running job has finished"
    if switching:
        return "A version switch is on its way"
    if v is None:
        return "Models are listed once the daemon runs"
    vid = str(v.get("id"))
    if "@" not in vid:
        return f"{vid} is a shipped model: only retrained versions can be deleted"
    return None


def in_use(v: Optional[Dict[str, Any]]) -> bool:
    """True for the active version, or a version in use in its area (deleting it
    needs the user's yes: it is rolled back first)."""
    v = v or {}
    lineage = v.get("lineage") or {}
    return bool(v.get("active") or v.get("in_use") or lineage.get("active")
                or lineage.get("in_use"))


__all__ = ["DECISIONS", "created_text", "figures_text", "use_text", "version_lines",
           "here_line", "delete_why", "in_use"]

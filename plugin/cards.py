"""Model cards as the engine lists them: the card to use, and the versions of a lineage.

A card is a dict of the engine's ``models`` reply (``id``, ``version``, ``classes``,
``default``, ``lineage``, ...). A retrained version's id is ``<base>@<number>``, where
``<base>`` is the id of the shipped model its lineage starts from. No QGIS here, so
scripts (``tools/demo.py``) use it too.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from protocol.errors import ModelNotFound


def base_id(model_id: Any) -> str:
    """The shipped model of a lineage: ``pv-unet-efl0@3`` -> ``pv-unet-efl0`` (an id
    without ``@`` is returned as it is)."""
    return str(model_id).split("@", 1)[0]


def lineage_cards(cards: List[Dict[str, Any]], card: Optional[Dict[str, Any]]
                  ) -> List[Dict[str, Any]]:
    """The cards of ``card``'s lineage (the same :func:`base_id`), ``card`` included;
    empty when ``card`` is None."""
    if card is None:
        return []
    base = base_id(card.get("id"))
    return [c for c in cards if base_id(c.get("id")) == base]


def default_card(cards: List[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The card the daemon flags ``"default": true`` in its ``models`` reply (its
    default for the device it runs on), else the first card, else None."""
    return next((c for c in cards if c.get("default")), cards[0] if cards else None)


def pick_card(cards: List[Dict[str, Any]], model_id: Optional[str]) -> Dict[str, Any]:
    """The card of ``model_id``, or the daemon's default card when ``model_id`` is None.

    Args:
        cards: the daemon's ``models`` reply.
        model_id: a card id (``<base>`` or ``<base>@<n>``), or None.

    Raises:
        ModelNotFound: no models, or no card with that id (the message lists the ids).
    """
    if not cards:
        raise ModelNotFound("The engine has no models installed: repair it with 'Set up "
                            "the engine…' in the Ortholens panel, then restart it.")
    if model_id is None:
        return default_card(cards)
    for c in cards:
        if c.get("id") == model_id:
            return c
    raise ModelNotFound(f"The daemon has no model '{model_id}' (available: "
                        f"{', '.join(str(c.get('id')) for c in cards)}).")


__all__ = ["base_id", "lineage_cards", "default_card", "pick_card"]

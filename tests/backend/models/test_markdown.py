"""backend.models.markdown: the human-readable model card rendered from ``card.json``
(the shipped one, an ensemble's, and a card with no training record)."""

from __future__ import annotations

from backend.models.card import ModelCard
from backend.models.catalog import load_card
from backend.models.markdown import DATA_CREDITS, ENCODER_CREDIT, render_markdown
from tests.support import DEFAULT_MODEL, REPO, ensemble_card


def test_the_shipped_model_card_is_its_card_rendered():
    card = load_card(DEFAULT_MODEL)
    text = render_markdown(card)
    assert text == (REPO / "models" / DEFAULT_MODEL / "MODEL_CARD.md").read_text("utf-8")
    m = card.heldout_metrics
    lo, hi = m["pixel_iou_90ci"]
    assert f"| pixel_iou | {m['pixel_iou']:.3f} [{lo:.3f}, {hi:.3f}] |" in text
    assert f"| false_objects | {m['false_objects']} |" in text
    assert text.startswith(f"# Model card: {DEFAULT_MODEL} v{card.version}\n")
    assert f"{card.parameters:,} parameters" in text
    for gsd, v in card.training.cross_validation.items():
        assert (f"| {gsd} m | {v['pixel_iou']:.3f} ± {v['pixel_iou_std']:.3f} | "
                f"{v['object_f1']:.3f} ± {v['object_f1_std']:.3f} |") in text
    assert text.endswith(DATA_CREDITS + ENCODER_CREDIT)


def test_an_ensemble_card_names_its_members_and_fusion():
    text = render_markdown(ensemble_card(tta=["identity", "hflip"], shifts=True))
    assert f"**Kind:** ensemble of `{DEFAULT_MODEL}` (weight 1.0)" in text
    assert "**Test-time augmentation:** identity, hflip" in text
    assert "**Shifted tilings:** yes (a second tiling offset by half a tile)" in text
    assert "each member normalises as its own card says" in text
    assert "## Training" not in text and "## Held-out metrics" not in text
    assert "**Shifted tilings:** no" in render_markdown(ensemble_card())


def test_a_card_without_records_renders_what_it_has():
    card = ModelCard.from_dict({
        "id": "bare", "version": "0.1", "classes": [{"id": 1, "name": "photovoltaic"}],
        "bands": 3, "gsd_m": 0.2, "tile_size": 256, "overlap": 32, "threshold": 0.4,
        "min_area_m2": 1.5, "simplify_m": 0.1, "architecture": "FPN", "encoder": "resnet18",
        "min_solidity": 0.6,
        "normalize": {"scale": 255, "mean": [0.4, 0.4, 0.4], "std": [0.2, 0.2, 0.2]}})
    text = render_markdown(card)
    assert "**Architecture:** `FPN` / `resnet18`" in text
    assert "- GSD: 0.2 m/pixel" in text and "- Tiles: 256 px with 32 px overlap" in text
    assert ("threshold 0.4, minimum object 1.5 m², holes below 0.0 m² filled, objects with "
            "a solidity below 0.6 or a mean probability below 0.0 dropped, simplification "
            "0.1 m. Chosen on the validation part of the *train* split") in text
    assert "near-rectangular" not in text and "## Cross-validation" not in text
    assert text.endswith(DATA_CREDITS)  # no pretrained encoder to credit


def test_a_card_with_post_processing_for_coarser_layers_lists_it():
    card = load_card(DEFAULT_MODEL).updated({"postprocess_by_gsd": [
        {"from_gsd_m": 0.25, "threshold": 0.4, "min_area_m2": 1.0, "min_score": 0.85,
         "cross_validation": {"object_f1": 0.812, "object_f1_std": 0.05}}]})
    text = render_markdown(card)
    assert ("- Layers of 0.25 m GSD and coarser: threshold 0.4, minimum object 1.0 m², "
            "holes below 0.0 m² filled, solidity below 0.0 or mean probability below 0.85 "
            "dropped (nested cross-validation inside the *train* split: object F1 0.812 "
            "± 0.050)") in text
    assert "and coarser" not in render_markdown(load_card(DEFAULT_MODEL))

"""backend.reports.report: the HTML report opens in headless Chromium without a console
message or a resource that fails (``tools.report_shot.load_check``), shows the totals,
and the check itself catches a broken page."""

from __future__ import annotations

import pytest

from backend.reports.job import build_inventory, write_outputs
from protocol.inventory import InventoryParams, VectorLayer
from tools.report_shot import load_check, screenshot

from tests.support import ROOFS


@pytest.fixture(scope="module")
def report(heldout, earlier, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    r = build_inventory(InventoryParams(
        detections=VectorLayer(str(heldout.path)), out_dir=str(out),
        buildings=VectorLayer(str(ROOFS)), building_id="building",
        earlier=VectorLayer(str(earlier.path))))
    return r, write_outputs(r)["html"]


def test_the_report_loads_in_headless_chromium_without_errors(report):
    r, html = report
    dom, problems = load_check(html)
    assert problems == []
    assert 'id="load-check">images 3 broken 0<' in dom
    assert f"<b>{r.total.installations}</b><span>installations</span>" in dom
    assert f"<b>{r.total.kwp:,.1f}</b><span>kWp nominal capacity" in dom
    assert f"<b>{r.total.area_m2:,.1f}</b><span>m² of panels" in dom
    for section in ("Per building", "Change since the earlier date", "Assumptions and "
                    "sources", "Rules", "Models and inputs"):
        assert f"<h2>{section}</h2>" in dom


def test_a_screenshot_of_the_report(report, tmp_path):
    import numpy as np
    from PIL import Image
    png = screenshot(report[1], tmp_path / "shot.png")
    with Image.open(png) as im:
        assert im.size[0] == 1200 and 1500 < im.size[1] <= 4200
        pixels = np.asarray(im.convert("RGB").resize((60, 200))).reshape(-1, 3)
    assert len(np.unique(pixels, axis=0)) > 50  # drawn, not blank


def test_the_check_catches_script_errors_and_missing_images(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text("<!DOCTYPE html><html><body><p>x</p><img src='missing.png'>"
                    "<script>undefinedFunction();</script></body></html>")
    _, problems = load_check(page)
    text = "\n".join(problems)
    assert "external reference: src='" in text
    assert "Uncaught ReferenceError: undefinedFunction is not defined" in text
    assert "failed resource: file://" in text and "1 of 1 images did not decode" in text

"""The solar inventory's report on real data, checked and photographed in headless
Chromium (``python3 build.py report-shot``).

    python -m tools.report_shot [--out DIR]

Detects with the shipped model on the 12 pv01 held-out tiles and on shifted, edited
copies of them (an earlier date with known changes, :mod:`tools.pv01_inventory`), makes
the inventory with the hand-digitised roofs of ``tests/fixtures/pv01_roofs.geojson``
and two zones around the sites, and writes ``DIR/solar_inventory.{gpkg,csv,html}``
(default ``out/report``). Then the report is loaded in headless Chromium
(:func:`load_check`: no console message, every image decoded, nothing fetched) and
screenshotted to ``DIR/solar_inventory.png``. Prints the totals; exit status 1 when
the check finds a problem.

Chromium is Debian's ``chromium`` (``build.py setup`` installs it).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List, Tuple

REPO = Path(__file__).resolve().parents[1]
ROOFS = REPO / "tests" / "fixtures" / "pv01_roofs.geojson"

#: Flags of every Chromium run: headless, no sandbox (root in containers), no GPU, no
#: network or profile side effects.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--no-first-run", "--disable-sync", "--hide-scrollbars")

#: Appended to a copy of the page by :func:`load_check`: once loaded, every image that
#: did not decode is a console error, and the counts go into the DOM.
_PROBE = ("<script>window.addEventListener('load',function(){var n=0,b=0;"
          "for(var i of document.images){n++;if(!(i.complete&&i.naturalWidth>0)){b++;"
          "console.error('failed resource: '+i.src.slice(0,80));}}"
          "var d=document.createElement('div');d.id='load-check';"
          "d.textContent='images '+n+' broken '+b;document.body.appendChild(d);});"
          "</script>")
#: What references something outside the page (an attribute or CSS ``url()`` that is
#: not a ``data:`` URI or an anchor).
_EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*['"](?!data:|#)|url\(\s*['"]?(?!data:)""",
                       re.IGNORECASE)


def chromium() -> str:
    """The Chromium executable.

    Raises:
        FileNotFoundError: none on ``PATH`` (``apt install chromium``, or
            ``python3 build.py setup``).
    """
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise FileNotFoundError("Chromium is not installed: apt install chromium "
                            "(python3 build.py setup installs it)")


def _run(args: List[str], timeout_s: float) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="ortholens-chromium-") as profile:
        return subprocess.run([chromium(), *CHROMIUM_FLAGS,
                               f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=timeout_s)


def load_check(html: Path, timeout_s: float = 120.0) -> Tuple[str, List[str]]:
    """Load a page in headless Chromium and list what went wrong.

    The page must reference nothing outside itself; a copy with a probe script is
    loaded with console logging on, and its DOM is dumped after the load event.

    Returns:
        ``(dom, problems)``: the DOM as Chromium built it, and one line per problem:
        an external reference, a console message (a script error, an image that did not
        decode), a missing load check, a Chromium that failed.
    """
    text = Path(html).read_text(encoding="utf-8")
    problems = [f"external reference: {m.group(0)}" for m in _EXTERNAL.finditer(text)]
    with tempfile.TemporaryDirectory(prefix="ortholens-page-") as tmp:
        probe = Path(tmp) / "page.html"
        probe.write_text(text.replace("</body>", _PROBE + "</body>"), encoding="utf-8")
        r = _run(["--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000",
                  "--dump-dom", probe.as_uri()], timeout_s)
    if r.returncode != 0:
        problems.append(f"chromium exited with {r.returncode}: {r.stderr[-500:]}")
    problems += [line for line in r.stderr.splitlines()
                 if ":CONSOLE" in line or "Uncaught" in line]
    check = re.search(r"id=\"load-check\">images (\d+) broken (\d+)<", r.stdout)
    if check is None:
        problems.append("the page never finished loading (no load check in its DOM)")
    elif check.group(2) != "0":
        problems.append(f"{check.group(2)} of {check.group(1)} images did not decode")
    return r.stdout, problems


def screenshot(html: Path, png: Path, width: int = 1200, height: int = 4200,
               timeout_s: float = 120.0) -> Path:
    """Screenshot a page in headless Chromium (``width`` x ``height`` CSS pixels), the
    empty margin below the page cut off; returns ``png``.

    Raises:
        RuntimeError: Chromium wrote no screenshot.
    """
    png = Path(png).resolve()
    png.unlink(missing_ok=True)
    r = _run([f"--window-size={width},{height}", f"--screenshot={png}",
              Path(html).resolve().as_uri()], timeout_s)
    if not png.is_file():
        raise RuntimeError(f"chromium wrote no screenshot (exit {r.returncode}): "
                           f"{r.stderr[-500:]}")
    _trim_bottom(png)
    return png


def _trim_bottom(png: Path, margin: int = 24) -> None:
    """Cut the rows below the page's last non-background row (keeping ``margin``)."""
    from PIL import Image
    import numpy as np
    with Image.open(png) as im:
        rgb = np.asarray(im.convert("RGB"))
    background = rgb[-1, rgb.shape[1] // 2]
    busy = np.nonzero((np.abs(rgb.astype(int) - background).sum(axis=2) > 12).any(axis=1))[0]
    if busy.size and busy[-1] + margin < rgb.shape[0] - 1:
        Image.fromarray(rgb[:busy[-1] + margin]).save(png)


def make_report(out: Path) -> dict:
    """Detect, make the inventory of the held-out tiles in ``out`` and return the
    ``stats`` of its ``result``."""
    import shapely

    from backend.reports.job import run_inventory
    from protocol.inventory import InventoryParams, VectorLayer
    from tools.pv01_inventory import detect_to_gpkg, earlier_copies, heldout_tiles

    work = out / "inputs"
    work.mkdir(parents=True, exist_ok=True)
    tiles = heldout_tiles()
    detect_to_gpkg(tiles, work / "heldout_2023.gpkg")
    detect_to_gpkg(earlier_copies(tiles, work / "earlier_tiles"), work / "earlier.gpkg")
    zones = work / "zones.geojson"
    boxes = {"West sites": (253000, 3600000, 254500, 3602000),
             "East site": (257500, 3600000, 259000, 3602000)}
    zones.write_text(json.dumps({
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32651"}},
        "features": [{"type": "Feature", "properties": {"name": name},
                      "geometry": shapely.geometry.mapping(shapely.box(*b))}
                     for name, b in boxes.items()]}))
    params = InventoryParams(
        detections=VectorLayer(str(work / "heldout_2023.gpkg")), out_dir=str(out),
        buildings=VectorLayer(str(ROOFS)), building_id="building",
        zones=VectorLayer(str(zones)), zone_name="name",
        earlier=VectorLayer(str(work / "earlier.gpkg")),
        title="Solar inventory — pv01 held-out tiles")
    return run_inventory(params, [])["stats"]


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "out" / "report")
    args = ap.parse_args(argv)
    stats = make_report(args.out)
    html = Path(stats["outputs"]["html"])
    dom, problems = load_check(html)
    png = screenshot(html, args.out / "solar_inventory.png")
    t = stats["totals"]
    print(f"installations {t['installations']}, area {t['area_m2']:.1f} m², modules "
          f"{t['modules']}, capacity {t['kwp']:.1f} kWp; change {stats.get('change')}")
    print(f"report: {html}\nscreenshot: {png}")
    for p in problems:
        print(f"PROBLEM: {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

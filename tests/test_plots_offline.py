"""`dvc plots show` writes a page that draws every chart with no network: Vega, Vega-Lite and
vega-embed are inlined from the pinned npm packages (.dvc/plots/build-offline.sh), and
.dvc/config makes that page DVC's template. Drawn for real in headless Chromium (skipped
where none is installed) with every network request refused."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from conftest import ROOT
from test_pipeline import sh, tiny_project

pytestmark = pytest.mark.e2e

PINS = re.compile(r"PINS=\((vega@[\d.]+) (vega-lite@[\d.]+) (vega-embed@[\d.]+)\)")


def test_the_template_inlines_the_pinned_libraries_and_loads_nothing():
    page = (ROOT / ".dvc" / "plots" / "offline.html").read_text()
    pins = PINS.search((ROOT / ".dvc" / "plots" / "build-offline.sh").read_text()).groups()
    for pin in pins:
        assert f"/* {pin} (" in page, pin                    # built from today's pins
    assert "{plot_divs}" in page and not re.search(r"<script[^>]*\bsrc=", page)
    assert "html_template = plots/offline.html" in (ROOT / ".dvc" / "config").read_text()


def chromium() -> str | None:
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser",
                                                "google-chrome"))), None)


@pytest.mark.skipif(chromium() is None, reason="no Chromium here to draw the page")
def test_dvc_plots_show_draws_every_chart_offline(tmp_path):
    proj = tiny_project(tmp_path, {"study": {"versions": ["none", "version_0"]}})
    sh(proj, "dvc", "repro")
    sh(proj, "dvc", "plots", "show")
    page = proj / "dvc_plots" / "index.html"
    html = page.read_text()
    assert "cdn.jsdelivr" not in html and not re.search(r"<script[^>]*\bsrc=", html)
    charts = len(re.findall(r'var spec = \{"', html))     # a chart with data
    assert charts == 5          # curves x2, per class, 2 confusion (one size: no size effect)
    dom = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu",
         "--proxy-server=socks5://127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND",
         "--virtual-time-budget=20000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=180).stdout
    drawn = [(int(w), int(h)) for w, h in
             re.findall(r'<canvas width="(\d+)" height="(\d+)" class="marks"', dom)]
    assert len([size for size in drawn if min(size) > 100]) == charts, drawn

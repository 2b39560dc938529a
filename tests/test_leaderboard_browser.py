"""The generated index.html in headless Chromium: rows render, filters and sorting work (by URL and by clicks),
and a screenshot is saved to test-artifacts/leaderboard.png.

Chromium is driven without any extra dependency: ``--dump-dom`` prints the DOM after the page's scripts ran,
and a copy of the page with a small driver script appended performs real clicks and select changes and writes
what it saw into the DOM. Skipped, with the reason, when no Chromium is installed (Debian: ``apt-get install
chromium``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"


def _chromium() -> str | None:
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


CHROMIUM = _chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not found (install the Debian packages "
                                "chromium and chromium-driver, or set CHROMIUM=/path/to/chrome); browser test skipped")


def _run(tmp_path: Path, *args: str) -> str:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.fixture(scope="module")
def page() -> Path:
    """The shipped index.html (159 reported numbers; test_reported_numbers checks it is up to date)."""
    return REPO / "leaderboard" / "index.html"


def _rows(dom: str) -> list[tuple[str, bool]]:
    """(row html, visible) for every leaderboard row, in DOM order."""
    return [(m.group(0), "hidden" not in m.group(1)) for m in re.finditer(r"<tr (data-protocol[^>]*)>.*?</tr>", dom, re.S)]


def _cells(row: str) -> list[str]:
    return [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]


def test_view_from_url_filters_and_sorts(page: Path, tmp_path: Path) -> None:
    dom = _run(tmp_path, "--dump-dom", page.as_uri() + "#protocol=paper-dd&subset=imagenette&ipc=10&sort=top1&dir=desc")
    rows = _rows(dom)
    assert len(rows) == 159
    shown = [_cells(r) for r, visible in rows if visible]
    assert [(c[5], c[6]) for c in shown] == [("EDF", "71.0†"), ("DATM", "68.9†"), ("FTD", "67.7†"), ("MTT", "63.0†"),
                                             ("Random", "44.8†")]
    assert all(c[0] == "paper-dd" and c[1] == "imagenette" and c[4] == "10" for c in shown)
    assert "5 of 159 records shown" in dom
    assert re.search(r'<th data-key="top1"[^>]*class="desc"', dom)


def test_clicks_and_selects_drive_the_table(page: Path, tmp_path: Path) -> None:
    driver = """<script>
(function(){
  var out = {}, d = document;
  function shown(){ return Array.prototype.filter.call(d.querySelectorAll('#lb tbody tr'), function(r){return !r.hidden;})
    .map(function(r){return [r.cells[0].textContent, r.cells[1].textContent, r.cells[4].textContent,
                             r.cells[5].textContent, r.cells[6].getAttribute('data-v')];}); }
  function pick(id, v){ var s = d.getElementById(id); s.value = v; s.dispatchEvent(new Event('change')); }
  function head(k){ return d.querySelector('th[data-key="' + k + '"]'); }
  out.initial = shown().length;
  pick('f-protocol', 'paper-nokd'); out.protocol = shown();
  pick('f-ipc', '50'); out.ipc = shown();
  head('top1').click(); out.top1_first = shown();
  head('top1').click(); out.top1_second = shown();
  head('method').click(); out.method = shown();
  out.hash = location.hash;
  pick('f-protocol', ''); pick('f-ipc', ''); out.cleared = shown().length;
  var pre = d.createElement('pre'); pre.id = 'test-out'; pre.textContent = JSON.stringify(out); d.body.appendChild(pre);
})();
</script>"""
    driven = tmp_path / "driven.html"
    driven.write_text(page.read_text("utf-8").replace("</body>", driver + "</body>"), "utf-8")
    dom = _run(tmp_path, "--dump-dom", driven.as_uri())
    m = re.search(r'<pre id="test-out">(.*?)</pre>', dom, re.S)
    assert m, "the driver script did not run"
    out = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert out["initial"] == 159 and out["cleared"] == 159
    assert len(out["protocol"]) == 27 and {r[0] for r in out["protocol"]} == {"paper-nokd"}
    assert len(out["ipc"]) == 9 and {r[2] for r in out["ipc"]} == {"50"}
    first = [float(r[4]) for r in out["top1_first"]]
    assert first == sorted(first, reverse=True) and first[0] == 77.8  # numbers sort high to low first
    assert [float(r[4]) for r in out["top1_second"]] == sorted(first)  # a second click reverses
    assert [r[3] for r in out["method"]] == sorted(r[3] for r in out["method"])  # text columns A to Z
    assert out["hash"] == "#protocol=paper-nokd&ipc=50&sort=method&dir=asc"


def test_screenshot_artifact(page: Path, tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "leaderboard.png"
    shot.unlink(missing_ok=True)
    _run(tmp_path, "--window-size=1400,1000", "--hide-scrollbars", f"--screenshot={shot}",
         page.as_uri() + "#protocol=paper-dd&ipc=10&sort=top1&dir=desc")
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1400, 1000)
        lo, hi = im.convert("L").getextrema()
        assert hi - lo > 100  # something was drawn, not a blank page

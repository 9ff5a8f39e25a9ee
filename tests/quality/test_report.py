"""The HTML report: figures from a seeded project, self-contained markup, charts that render.

Rendering is checked in real headless Chromium (the system's ``/usr/bin/chromium``, never a
downloaded browser): with Playwright when it is installed, and otherwise by letting Chromium
run a measuring script over a copy of the report and dumping the DOM.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from tests.conftest import CHROMIUM, CHROMIUM_ARGS

from llmlabel.report import build_report, render_html, write_report
from llmlabel.store.db import open_engine, session_scope
from llmlabel.store.tables import Alert, Voter

from .conftest import Seeded, seed_project

XSS = "<script>alert(1)</script>"
MEASURE = """<script>
const out = [...document.querySelectorAll("svg.chart")].map(s => {
  const r = s.getBoundingClientRect();
  return {label: s.getAttribute("aria-label"), width: r.width, height: r.height, marks: s.querySelectorAll("rect,circle,line").length};
});
const pre = document.createElement("pre"); pre.id = "measured"; pre.textContent = JSON.stringify(out);
document.body.appendChild(pre);
</script>"""


def _report(seeded: Seeded, tmp_path: Path) -> tuple[Path, str]:
    with session_scope(seeded.engine) as s:
        s.execute(update(Voter).where(Voter.name == "h0").values(name=XSS))  # type: ignore[arg-type]
        s.add(Alert(project_id=seeded.project.id, kind="gold_accuracy", subject="llm:llm0", value=0.4, low=0.7,  # type: ignore[arg-type]
                    message=f"gold accuracy of llm:llm0 fell {XSS}"))
    path = tmp_path / "out" / "report.html"
    write_report(seeded.engine, project=seeded.project, config=seeded.config, path=path, n_boot=200)
    return path, path.read_text(encoding="utf-8")


def test_report_figures(seeded: Seeded) -> None:
    d = build_report(seeded.engine, project=seeded.project, config=seeded.config, n_boot=200)
    assert d.status.items == 240 and sum(d.status.by_status.values()) == 240
    assert d.accuracy.final_items == d.status.by_status["final"]
    exp = d.accuracy.expected
    assert 0.8 < exp.estimate <= 1.0 and exp.low <= exp.estimate <= exp.high
    assert d.calibration.n == 60 and d.calibration.rows  # every gold item has votes
    assert sum(r[2] for r in d.calibration.rows) == 60
    assert d.accuracy.heldout_gold is not None and d.accuracy.heldout_gold.n == 60
    assert 0.2 < d.agreement.human_alpha.estimate < 0.9
    assert {v.name for v in d.agreement.voters} == {f"h{i}" for i in range(6)} | {"llm0", "llm1"}
    assert sum(d.human_per_day) + sum(d.machine_per_day) == d.status.votes  # all votes are from the last 8 days


def test_report_is_one_self_contained_file(seeded: Seeded, tmp_path: Path) -> None:
    _, html = _report(seeded, tmp_path)
    assert html.count("<svg") >= 6
    assert "<script" not in html  # the voter's name and the alert's message are escaped
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    urls = set(re.findall(r"https?://[^\s\"'<>)]+", html))
    assert urls <= {"http://www.w3.org/2000/svg"}  # no CDN, no fonts, no images from anywhere
    assert not re.search(r"<(link|img|iframe)\b", html)
    for section in ("Progress", "How accurate is the dataset?", "Calibration", "Agreement", "Voters",
                    "Confusion matrices", "Cost", "Alerts"):
        assert section in html


@pytest.fixture
def sqlite_seeded(tmp_path: Path) -> Seeded:
    """Rendering does not depend on the database: the browser tests run on SQLite only."""
    return seed_project(open_engine(f"sqlite:///{tmp_path / 'browser.db'}"), tmp_path)


def _measure_with_playwright(browser: Any, path: Path, shot: Path) -> list[dict[str, Any]]:
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    try:
        requested: list[str] = []
        page.on("request", lambda r: requested.append(r.url))
        page.goto(path.as_uri())
        charts = [{"label": s.get_attribute("aria-label"), **(s.bounding_box() or {"width": 0, "height": 0}),
                   "marks": len(s.query_selector_all("rect,circle,line"))} for s in page.query_selector_all("svg.chart")]
        page.screenshot(path=str(shot), full_page=True)
    finally:
        page.close()
    assert requested == [path.as_uri()]  # the report fetched nothing
    return charts


def _measure_with_chromium_cli(path: Path, html: str, shot: Path, profile: Path) -> list[dict[str, Any]]:
    probe = path.with_name("probe.html")
    probe.write_text(html.replace("</body>", MEASURE + "</body>"), encoding="utf-8")
    dom = subprocess.run([str(CHROMIUM), "--headless", *CHROMIUM_ARGS, f"--user-data-dir={profile}",
                          "--virtual-time-budget=3000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=90, check=False).stdout
    found = re.search(r'<pre id="measured">(.*?)</pre>', dom, re.S)
    assert found, dom[-2000:]
    subprocess.run([str(CHROMIUM), "--headless", *CHROMIUM_ARGS, f"--user-data-dir={profile}", "--hide-scrollbars",
                    "--window-size=1100,4400", f"--screenshot={shot}", path.as_uri()],
                   capture_output=True, timeout=90, check=False)
    charts: list[dict[str, Any]] = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    return charts


@pytest.mark.browser
def test_charts_render_with_a_size_in_chromium(sqlite_seeded: Seeded, tmp_path: Path, chromium: Any) -> None:
    """Playwright driving the system Chromium; without Playwright, Chromium alone (--dump-dom
    after a measuring script), so the check never silently disappears."""
    path, html = _report(sqlite_seeded, tmp_path)
    shot = tmp_path / "report.png"
    if chromium is None:
        charts = _measure_with_chromium_cli(path, html, shot, tmp_path / "profile")
    else:
        charts = _measure_with_playwright(chromium, path, shot)
    labels = {c["label"] for c in charts}
    assert {"items per status", "reliability diagram of consensus posteriors", "agreement with 95% intervals",
            "consensus vs gold (held out)", "votes per day", "dataset accuracy with 95% intervals"} <= labels
    for c in charts:
        assert c["width"] > 50 and c["height"] > 20 and c["marks"] > 0, c
    assert shot.exists() and shot.stat().st_size > 20_000
    if os.environ.get("LLMLABEL_SHOTS"):
        shutil.copy(shot, Path(os.environ["LLMLABEL_SHOTS"]) / "report.png")


def test_render_escapes_everything_it_is_given(seeded: Seeded) -> None:
    d = build_report(seeded.engine, project=seeded.project, config=seeded.config, n_boot=100)
    d.project = XSS
    assert XSS not in render_html(d)

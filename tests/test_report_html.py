"""The HTML report of a demo database: the figures a person reads on the page are `report
--json`'s, the page fetches nothing, and in a real browser it shows its charts without errors."""

from __future__ import annotations

import json
import struct
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from router.cli import main
from router.report_html import CONTENT_SECURITY_POLICY
from router.svg import Series, bar_chart, nice_ceiling
from tests.browser import Chromium, find_chromium


class Page(HTMLParser):
    """The parts of the report page the tests read: table cells by table id, the headline
    figures by id, the charts' bars, and every tag and attribute seen."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.figures: dict[str, str] = {}
        self.bars: dict[str, list[dict[str, str]]] = {}  # chart id -> its bars' attributes
        self.tags: list[tuple[str, dict[str, str]]] = []
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._figure: str | None = None
        self._value: list[str] | None = None
        self._chart: str | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.append((tag, a))
        if tag == "table":
            self._table = a["id"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "div" and "figure" in a.get("class", ""):
            self._figure = a["id"]
        elif tag == "div" and a.get("class") == "value" and self._figure is not None:
            self._value = []
        elif tag == "svg":
            self._chart = a["id"]
            self.bars[self._chart] = []
        elif tag == "rect" and "bar" in a.get("class", "") and self._chart is not None:
            self.bars[self._chart].append(a)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None
        elif tag == "div" and self._value is not None and self._figure is not None:
            self.figures[self._figure] = "".join(self._value)
            self._value = self._figure = None
        elif tag == "svg":
            self._chart = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._value is not None:
            self._value.append(data)


def count(text: str) -> int:
    return int(text.replace(",", ""))


def dollars(text: str) -> float:
    assert text.startswith("$"), text
    return float(text[1:].replace(",", ""))


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A demo database, its `report --json` figures and its `report --html` page."""
    work = tmp_path_factory.mktemp("report")
    db = work / "demo.db"
    assert main(["demo", "--requests", "300", "--db", str(db)]) == 0
    config = work / "router.toml"
    config.write_text(f'[store]\npath = "{db}"\n', encoding="utf-8")
    page = work / "report.html"
    assert main(["--config", str(config), "report", "--html", str(page)]) == 0
    return {"config": config, "page": page, "html": page.read_text(encoding="utf-8")}


def report_json(config: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["--config", str(config), "report", "--json"]) == 0
    figures: dict[str, Any] = json.loads(capsys.readouterr().out)
    return figures


def test_the_page_shows_the_figures_of_report_json(
    demo: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    figures = report_json(demo["config"], capsys)
    page = Page(demo["html"])
    totals = figures["totals"]
    assert totals["saving"] > 0  # the demo batches most of its calls
    assert dollars(page.figures["saving"]) == pytest.approx(totals["saving"], abs=5e-5)
    assert dollars(page.figures["spent"]) == pytest.approx(totals["cost"], abs=5e-5)
    assert count(page.figures["requests"]) == totals["requests"]

    lanes = {row[0]: row for row in page.tables["lanes"][1:]}
    for lane in ("realtime", "batch"):
        assert count(lanes[lane][1]) == totals["lanes"][lane]["requests"]
        assert dollars(lanes[lane][3]) == pytest.approx(totals["lanes"][lane]["cost"], abs=5e-5)

    header, *rows = page.tables["tags"]
    assert header[:2] == ["tag", "calls"]
    assert [r[0] for r in rows] == [t["tag"] or "(no tag)" for t in figures["tags"]]
    for row, tag in zip(rows, figures["tags"], strict=True):
        assert count(row[1]) == tag["calls"]
        assert dollars(row[3]) == pytest.approx(tag["cost"], abs=5e-5)
        assert dollars(row[4]) == pytest.approx(tag["saving"], abs=5e-5)
        assert (count(row[6]), count(row[7])) == (tag["escalated"], tag["missed"])
    assert sum(t["escalated"] for t in figures["tags"]) > 0  # the demo escalates a tag

    opportunities = page.tables["opportunities"][1:]
    assert [r[0] for r in opportunities] == [o["tag"] or "(no tag)" for o in figures["opportunities"]]
    for row, o in zip(opportunities, figures["opportunities"], strict=True):
        assert count(row[1]) == o["calls"]
        assert dollars(row[3]) == pytest.approx(o["cost"], abs=5e-5)
        assert [dollars(cell.split(" ")[0]) for cell in row[4:]] == pytest.approx(
            [c["cost"] for c in o["classes"]], abs=5e-5
        )

    turnarounds = page.tables["turnarounds"][1:]
    assert [(r[0], count(r[1])) for r in turnarounds] == [
        (m["model"], m["batches"]) for m in figures["turnarounds"]
    ]

    # One bar per lane and day that billed anything, its tooltip the day's figure.
    bars = page.bars["spend"]
    expected = [(d["date"][5:], "batch", d["batch"]) for d in figures["days"] if d["batch"] > 0] + [
        (d["date"][5:], "real time", d["realtime"]) for d in figures["days"] if d["realtime"] > 0
    ]
    assert len(bars) == len(expected) > 0
    assert all(float(b["height"]) > 0 for b in bars)


def test_the_page_fetches_nothing_and_runs_no_script(demo: dict[str, Any]) -> None:
    page = Page(demo["html"])
    names = {tag for tag, _ in page.tags}
    assert not names & {"script", "link", "img", "iframe", "object", "embed"}
    for tag, attrs in page.tags:
        assert not {"src", "href"} & set(attrs), tag
        assert not any(k.startswith("on") for k in attrs), tag
    assert (
        "meta",
        {"http-equiv": "Content-Security-Policy", "content": CONTENT_SECURITY_POLICY},
    ) in page.tags
    assert "url(" not in demo["html"] and "@import" not in demo["html"]


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_chromium_shows_the_charts_without_errors(demo: dict[str, Any], tmp_path: Path) -> None:
    executable = find_chromium()
    if executable is None:
        pytest.skip("no Chromium on PATH (Debian: apt-get install chromium)")
    url = demo["page"].resolve().as_uri()
    with Chromium(executable) as browser:
        browser.open(url)
        charts = browser.evaluate(
            "[...document.querySelectorAll('svg.chart')].map(s => {"
            " const r = s.getBoundingClientRect(); return [s.id, r.width, r.height]; })"
        )
        bars = browser.evaluate(
            "[...document.querySelectorAll('svg.chart rect.bar')].filter(b => {"
            " const r = b.getBoundingClientRect(); return r.width > 0 && r.height > 0; }).length"
        )
        browser.screenshot(tmp_path / "report.png")
        assert browser.errors() == []
        assert browser.requested() == [url]  # the page alone: no script, font or image from anywhere
    ids = [c[0] for c in charts]
    assert "spend" in ids and any(i.startswith("turnaround-") for i in ids)
    assert all(width > 0 and height > 0 for _, width, height in charts)
    assert bars > 0
    width, height = png_size((tmp_path / "report.png").read_bytes())
    assert width == 1100 and height > 900


def test_bad_report_options_are_one_line_errors(
    demo: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["--config", str(demo["config"]), "report", "--since", "3x"]) == 2
    assert "--since: expected" in capsys.readouterr().err
    missing = demo["page"].parent / "no-such-folder" / "r.html"
    assert main(["--config", str(demo["config"]), "report", "--html", str(missing)]) == 2
    err = capsys.readouterr().err
    assert f"--html {missing}: cannot write" in err and len(err.strip().splitlines()) == 1


def test_bar_heights_follow_the_values() -> None:
    svg = bar_chart(["a", "b"], [Series("x", "#000", [1.0, 3.0])], title="t", chart_id="c")
    bars = Page(svg).bars["c"]
    heights = [float(b["height"]) for b in bars]
    assert heights[1] == pytest.approx(3 * heights[0], rel=0.01)
    with pytest.raises(ValueError, match="series 'x' has 1 values for 2 labels"):
        bar_chart(["a", "b"], [Series("x", "#000", [1.0])], title="t")
    assert [nice_ceiling(v) for v in (0.0, 0.7, 1.0, 1.3, 2.2, 3.0, 7.0, 0.031)] == [
        1.0,
        1.0,
        1.0,
        2.0,
        2.5,
        5.0,
        10.0,
        0.05,
    ]


def test_purge_of_the_demo_database_leaves_the_report_as_it_was(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "demo.db"
    assert main(["demo", "--requests", "120", "--db", str(db)]) == 0
    config = tmp_path / "router.toml"
    config.write_text(f'[store]\npath = "{db}"\n', encoding="utf-8")
    before = report_json(config, capsys)
    assert main(["--config", str(config), "report"]) == 0
    text = capsys.readouterr().out

    assert main(["--config", str(config), "purge", "--older-than", "0s", "--dry-run"]) == 0
    dry = capsys.readouterr().out
    assert dry.startswith("would purge ") and "ledger rows older than 0s" in dry
    after_dry = report_json(config, capsys)
    assert main(["--config", str(config), "purge", "--older-than", "0s"]) == 0
    done = capsys.readouterr().out
    assert done == dry.replace("would purge", "purged", 1)  # the dry run counted what went
    assert " 0 ledger rows" not in done and " 0 daily-total rows" not in done

    after = report_json(config, capsys)
    for figures in (before, after_dry, after):
        del figures["generated_at"]
    assert after_dry == before and after == before
    assert main(["--config", str(config), "report"]) == 0
    assert capsys.readouterr().out == text

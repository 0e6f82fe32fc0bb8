"""The operator dashboard in Debian's chromium (driven by Playwright) against a real uvicorn server with a
temporary SQLite database: enter the API key, review frames with the keyboard (one card per frame, queued
keystrokes, undo, a frame marked fully reviewed), draw a missed defect and move a box's corner (both reach
the reviewed export), zoom and pan, the queue refreshing by itself; check the rows. The box labels on the
review canvas, read back from the canvas's drawnLabels record and from its pixels, stay whole inside the
canvas and legible, and the selected box stands out. The Map view draws tracked defects along the
material (marks read back from the SVG: order, colours, legend) and opens one in Review.

Set INSPECT_TEST_SCREENSHOTS=<dir> to keep screenshots of the views."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import REPO_ROOT, SHIPPED_INT8
from live_server import serving
from mes_helpers import NAMES, SeedDefect, SeedInspection, build_seed, frame, make_key, seed_database
from sqlalchemy import insert, select
from track_helpers import LEVELS, run_to_the_end, standing_strip, strip_camera

from app.annotate import place_label
from app.api.routes.tracks import MAX_MAP
from app.db.models import Alarm, Defect, DefectReview, Inspection, Track
from app.db.session import Database
from app.detections import Detections
from app.ingest.journal import Journal
from app.ingest.writer import DbWriter, Item, TrackItem
from app.inspection import CameraContext, inspect_frame
from app.inspection.store import apply_image_policy
from app.inspection.tracks import TrackRecord

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("INSPECT_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
APP_JS = REPO_ROOT / "app" / "dashboard" / "app.js"


def _auth_settings(url: str, model_path: Path, data_dir: Path):
    from app.db.migrate import upgrade
    from app.settings import Settings

    upgrade(url)
    return Settings(database_url=url, model_path=model_path, data_dir=data_dir, auth_enabled=True,
                    providers=["cpu"], intra_op_threads=1)


@pytest.fixture
def server(tiny_model_path: Path, tmp_path: Path) -> Iterator[dict]:
    """uvicorn on a free 127.0.0.1 port: auth on, a migrated temp SQLite DB, seeded inspections with
    stored images, and an operator key."""
    url = f"sqlite:///{tmp_path / 'dash.db'}"
    settings = _auth_settings(url, tiny_model_path, tmp_path / "data")
    # recent data, so today's yield and the 24-hour stats have something to show
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    ids = seed_database(url, settings.data_dir, build_seed(30, t0=start))
    key = make_key(url, "operator", "op-browser")
    with serving(settings) as base:
        yield {"base": base, "url": url, "key": key, "ids": ids}


# One 160x120 frame (seed_database's frame size), shown 4x on the canvas (640x480), with the boxes whose
# labels used to go wrong: one as tall as the frame, one at the right edge, one at the top edge.
EDGE_DEFECTS = {
    "full height": SeedDefect(1, 0.91, (30.0, 0.0, 70.0, 120.0)),  # inclusion: pink
    "right edge": SeedDefect(5, 0.77, (136.0, 40.0, 160.0, 75.0)),  # scratches
    "top edge": SeedDefect(0, 0.64, (85.0, 0.0, 115.0, 25.0)),  # crazing
}
CANVAS_SCALE = 4
CANVAS_W, CANVAS_H = 160 * CANVAS_SCALE, 120 * CANVAS_SCALE


@pytest.fixture
def edge_server(tiny_model_path: Path, tmp_path: Path) -> Iterator[dict]:
    """Like ``server``, with a single NG inspection holding EDGE_DEFECTS; yields also its inspection id
    and {EDGE_DEFECTS key: defect id}."""
    url = f"sqlite:///{tmp_path / 'edges.db'}"
    settings = _auth_settings(url, tiny_model_path, tmp_path / "data")
    edges = SeedInspection(7, "L1", "S1", "P-EDGE", datetime.now(UTC) - timedelta(minutes=5),
                           list(EDGE_DEFECTS.values()))
    inspection_id = seed_database(url, settings.data_dir, [edges])[7]
    db = Database(url)
    try:
        with db.session() as session:
            by_class = {d.class_name: d.id for d in
                        session.scalars(select(Defect).where(Defect.inspection_id == inspection_id))}
    finally:
        db.dispose()
    defects = {name: by_class[NAMES[seed.class_id]] for name, seed in EDGE_DEFECTS.items()}
    key = make_key(url, "operator", "op-edges")
    with serving(settings) as base:
        yield {"base": base, "key": key, "inspection_id": inspection_id, "defects": defects, "url": url,
               "data_dir": settings.data_dir}


def _noon_zone(now: datetime | None = None) -> str:
    """An ``Etc/GMT`` time zone where it is now between 12:00 and 13:00 (POSIX sign: GMT-5 is UTC+5)."""
    offset = 12 - (now or datetime.now(UTC)).hour  # -11 .. +12 hours from UTC
    return "Etc/UTC" if offset == 0 else f"Etc/GMT{-offset:+d}"


@pytest.fixture
def page():
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"chromium not installed at {CHROMIUM} "
                    "(apt-get install chromium, or set INSPECT_TEST_CHROMIUM)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            # the browser's clock reads about noon (a fixed UTC offset chosen now), so the data seeded over
            # the last hours lies in its "today" at any hour the suite runs, also just after midnight
            pg = browser.new_page(viewport={"width": 1440, "height": 900}, timezone_id=_noon_zone())
            errors: list[str] = []
            pg.on("pageerror", lambda exc: errors.append(str(exc)))
            pg.js_errors = errors  # type: ignore[attr-defined]
            yield pg
        finally:
            browser.close()


def _defect(url: str, defect_id: int) -> tuple[Defect, list[DefectReview]]:
    db = Database(url)
    try:
        with db.session() as session:
            d = session.get(Defect, defect_id)
            audit = list(session.scalars(select(DefectReview).where(DefectReview.defect_id == defect_id)))
            session.expunge_all()
            return d, audit
    finally:
        db.dispose()


def _shot(page, name: str) -> None:
    target = os.environ.get("INSPECT_TEST_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(target) / f"{name}.png"), full_page=True)


def _sign_in(page, url: str, key: str, name: str) -> None:
    page.goto(url)
    # auth is on and the browser has no key yet: the dialog asks for one
    page.wait_for_selector("#key-dialog[open]")
    page.fill("#key-input", key)
    page.click("#key-save")
    page.wait_for_selector(f"#who:has-text('{name}')")


def _wait_drawn(page, defect_id: int) -> None:
    """Until the review canvas shows ``defect_id``'s frame with that defect selected."""
    page.wait_for_function(
        "id => (document.querySelector('#image-canvas').drawnLabels || [])"
        ".some((l) => l.selected && l.defectId === id)", arg=defect_id)

VIEWPORTS = [(1440, 900), (1024, 768)]


def _viewport_id(v: tuple[int, int]) -> str:
    return f"{v[0]}x{v[1]}"


def _frame_defects(url: str, inspection_id: int) -> list[Defect]:
    db = Database(url)
    try:
        with db.session() as session:
            rows = list(session.scalars(select(Defect).where(Defect.inspection_id == inspection_id)
                                        .order_by(Defect.id)))
            session.expunge_all()
            return rows
    finally:
        db.dispose()


def _on_screen(page, selector: str) -> bool:
    box = page.locator(selector).bounding_box()
    size = page.viewport_size
    return box is not None and box["x"] >= 0 and box["x"] + box["width"] <= size["width"] \
        and box["y"] >= 0 and box["y"] + box["height"] <= size["height"]


def _idle(page) -> None:
    """Until every queued action has been sent."""
    page.wait_for_function("document.querySelector('#ops-pending').dataset.count === '0'")


@pytest.mark.parametrize("viewport", VIEWPORTS, ids=_viewport_id)
def test_review_by_frame_with_the_keyboard(server, page, viewport):
    """The queue holds one card per frame with all its boxes; A, R and a class digit decide the selected
    box and move to the next one; Shift+A confirms what is left of a frame, F marks it fully reviewed
    and U undoes each in turn; the Reviewed row reads the same way for every outcome; Confirm and Reject
    stay on screen."""
    page.set_viewport_size({"width": viewport[0], "height": viewport[1]})
    _sign_in(page, server["base"] + "/#review", server["key"], "op-browser")
    page.wait_for_selector("#queue li.card")
    ng = [s for s in build_seed(30) if s.defects]
    cards = page.locator("#queue li.card")
    assert cards.count() == len(ng)  # 8 NG frames, 12 boxes
    assert page.locator("#queue li.box-chip").count() == sum(len(s.defects) for s in ng)
    assert _on_screen(page, "#btn-confirm") and _on_screen(page, "#btn-reject")
    _shot(page, f"review-frames-{_viewport_id(viewport)}")

    # the newest NG frame with two boxes: the first box is selected
    two = next(int(c.get_attribute("data-inspection-id")) for c in cards.all()
               if c.locator("li.box-chip").count() == 2)
    page.click(f"#queue li.card[data-inspection-id='{two}'] .card-head")
    first, second = (d.id for d in _frame_defects(server["url"], two))
    _wait_drawn(page, first)
    page.keyboard.press("r")
    _wait_drawn(page, second)  # moved on to the frame's next box
    page.keyboard.press("3")
    _idle(page)
    rows = _frame_defects(server["url"], two)
    assert [(d.review_status, d.reviewed_class_name, d.reviewed_by) for d in rows] == [
        ("rejected", None, "op-browser"), ("reclassified", NAMES[2], "op-browser")]
    page.click(f"#queue li[data-defect-id='{first}']")
    page.wait_for_selector("#detail-facts dd:text-is('rejected')")
    page.click(f"#queue li[data-defect-id='{second}']")
    page.wait_for_selector(f"#detail-facts dd:text-is('reclassified as {NAMES[2]}')")
    page.wait_for_selector("#history li:has-text('op-browser: reclassify')")

    # a frame confirmed whole, then marked fully reviewed
    other = next(int(c.get_attribute("data-inspection-id")) for c in cards.all()
                 if c.locator("li.box-chip").count() == 2
                 and int(c.get_attribute("data-inspection-id")) != two)
    page.click(f"#queue li.card[data-inspection-id='{other}'] .card-head")
    page.keyboard.press("Shift+A")
    page.click(f"#queue li.card[data-inspection-id='{other}'] .card-head")
    page.keyboard.press("f")
    _idle(page)
    rows = _frame_defects(server["url"], other)
    assert [d.review_status for d in rows] == ["confirmed", "confirmed"]
    page.click(f"#queue li[data-defect-id='{rows[0].id}']")
    page.wait_for_selector(f"#detail-facts dd:text-is('confirmed as {rows[0].class_name}')")
    db = Database(server["url"])
    try:
        with db.session() as session:
            assert session.get(Inspection, other).fully_reviewed_by == "op-browser"
    finally:
        db.dispose()
    # U undoes "fully reviewed", a second U the whole-frame confirmation (both boxes)
    page.keyboard.press("u")
    _idle(page)
    page.keyboard.press("u")
    _idle(page)
    assert [d.review_status for d in _frame_defects(server["url"], other)] == ["pending", "pending"]
    db = Database(server["url"])
    try:
        with db.session() as session:
            assert session.get(Inspection, other).fully_reviewed_at is None
    finally:
        db.dispose()

    page.goto(server["base"] + "/#stats")
    page.wait_for_selector("#stats-kpis .kpi")
    page.wait_for_function("window.Chart && Object.keys(Chart.instances).length >= 2")
    _shot(page, f"stats-{_viewport_id(viewport)}")
    page.goto(server["base"] + "/#live")
    page.wait_for_selector("#yield-lines .yield-row")
    page.wait_for_selector("#today-kpis .kpi")
    _shot(page, f"live-{_viewport_id(viewport)}")
    assert page.js_errors == []  # type: ignore[attr-defined]


@pytest.mark.parametrize("viewport", VIEWPORTS, ids=_viewport_id)
def test_keystrokes_typed_while_busy_are_queued_and_u_undoes(edge_server, page, viewport):
    """Three A presses as fast as the keyboard goes confirm the frame's three boxes (none dropped, the
    pending count shows while they are sent); U undoes the last one (audited); F marks the frame fully
    reviewed once it is decided again."""
    page.set_viewport_size({"width": viewport[0], "height": viewport[1]})
    # every review request waits until the test lets it through, so the keystrokes pile up
    held: list = []
    gate = {"open": False}
    page.route("**/api/v1/defects/*/review",
               lambda route: route.continue_() if gate["open"] else held.append(route))
    _sign_in(page, edge_server["base"] + "/#review", edge_server["key"], "op-edges")
    page.wait_for_selector("#queue li.box-chip")
    ids = sorted(edge_server["defects"].values())
    _wait_drawn(page, ids[0])
    for _ in ids:
        page.keyboard.press("a")
    page.wait_for_function("document.querySelector('#ops-pending').dataset.count === '3'")
    assert "sending 3 actions" in page.inner_text("#ops-pending")
    assert page.locator("#queue li.box-chip.queued").count() == 3
    assert len(held) == 1  # one request out, the two other keystrokes wait their turn in the page
    gate["open"] = True
    held[0].continue_()
    _idle(page)
    frame = _frame_defects(edge_server["url"], edge_server["inspection_id"])
    assert [d.review_status for d in frame] == ["confirmed"] * 3

    page.keyboard.press("u")
    _idle(page)
    page.wait_for_selector("#review-message:has-text('Undone')")
    last = ids[-1]
    defect, audit = _defect(edge_server["url"], last)
    assert defect.review_status == "pending"
    assert [(a.action, a.before_status, a.after_status, a.actor) for a in audit] == [
        ("confirm", "pending", "confirmed", "op-edges"), ("undo", "confirmed", "pending", "op-edges")]
    _wait_drawn(page, last)
    page.keyboard.press("a")
    page.keyboard.press("f")
    _idle(page)
    db = Database(edge_server["url"])
    try:
        with db.session() as session:
            assert session.get(Inspection, edge_server["inspection_id"]).fully_reviewed_at is not None
    finally:
        db.dispose()
    assert page.js_errors == []  # type: ignore[attr-defined]


def _to_page(page, x: float, y: float) -> tuple[float, float]:
    """Page coordinates of the image pixel (x, y) on the review canvas at zoom 1 (the frame is 160 px
    wide)."""
    box = page.locator("#image-canvas").bounding_box()
    k = box["width"] / 160
    return box["x"] + x * k, box["y"] + y * k


def _drag(page, a: tuple[float, float], b: tuple[float, float]) -> None:
    page.mouse.move(*a)
    page.mouse.down()
    page.mouse.move(*b, steps=6)
    page.mouse.up()


@pytest.mark.parametrize("viewport", VIEWPORTS, ids=_viewport_id)
def test_a_drawn_missed_defect_and_a_moved_corner_reach_the_export(edge_server, page, viewport, tmp_path):
    """D and a drag draw a box, a digit gives its class: a confirmed defect of source operator; a corner
    of a model box dragged, then A: the box is stored with its new corners; both are in the reviewed
    export."""
    from app.reviewed_export import export_reviewed

    page.set_viewport_size({"width": viewport[0], "height": viewport[1]})
    _sign_in(page, edge_server["base"] + "/#review", edge_server["key"], "op-edges")
    page.wait_for_selector("#queue li.box-chip")
    ids = edge_server["defects"]
    _wait_drawn(page, min(ids.values()))

    page.keyboard.press("d")
    _drag(page, _to_page(page, 100, 60), _to_page(page, 130, 100))
    page.wait_for_selector("#draw-classes:not([hidden])")
    _shot(page, f"review-draw-{_viewport_id(viewport)}")
    page.keyboard.press("4")
    _idle(page)
    frame = _frame_defects(edge_server["url"], edge_server["inspection_id"])
    [drawn] = [d for d in frame if d.source == "operator"]
    assert (drawn.class_name, drawn.review_status, drawn.reviewed_by) == (NAMES[3], "confirmed", "op-edges")
    assert [drawn.x1, drawn.y1, drawn.x2, drawn.y2] == pytest.approx([100, 60, 130, 100], abs=1.5)
    page.wait_for_function("id => (document.querySelector('#image-canvas').drawnLabels || [])"
                           ".some((l) => l.defectId === id && l.text.endsWith('drawn'))", arg=drawn.id)

    # the right-edge box (136, 40)-(160, 75): its top-left corner dragged to (120, 30)
    right = ids["right edge"]
    page.click(f"#queue li[data-defect-id='{right}']")
    _wait_drawn(page, right)
    _drag(page, _to_page(page, 136, 40), _to_page(page, 120, 30))
    page.wait_for_selector("#detail-facts dd:has-text('moved, not saved')")
    page.keyboard.press("a")
    _idle(page)
    moved, audit = _defect(edge_server["url"], right)
    assert [moved.x1, moved.y1, moved.x2, moved.y2] == pytest.approx([120, 30, 160, 75], abs=1.5)
    assert audit[-1].before_box == [136.0, 40.0, 160.0, 75.0]

    db = Database(edge_server["url"])
    try:
        with db.session() as session:
            names = list(NAMES)
            out = tmp_path / "export"
            export_reviewed(session, edge_server["data_dir"], out, names, include_pending=True)
    finally:
        db.dispose()
    [labels] = [[[float(v) for v in line.split()] for line in p.read_text().splitlines()]
                for p in out.glob("labels/*/*.txt")]
    by_class = {int(row[0]): row[1:] for row in labels}
    # the drawn one: (100, 60)-(130, 100) of the 160x120 frame; the moved one (120, 30)-(160, 75)
    assert by_class[3] == pytest.approx([115 / 160, 80 / 120, 30 / 160, 40 / 120], abs=0.01)
    assert by_class[5] == pytest.approx([140 / 160, 52.5 / 120, 40 / 160, 45 / 120], abs=0.01)
    assert page.js_errors == []  # type: ignore[attr-defined]


@pytest.mark.parametrize("viewport", [(1920, 1080), (1024, 768)], ids=_viewport_id)
def test_zoom_and_pan_keep_labels_inside_the_canvas(edge_server, page, viewport):
    """+ and the wheel zoom in, a drag pans, 0 shows the whole frame again; the boxes follow the image
    and every label drawn stays whole inside the canvas."""
    page.set_viewport_size({"width": viewport[0], "height": viewport[1]})
    _sign_in(page, edge_server["base"] + "/#review", edge_server["key"], "op-edges")
    page.wait_for_selector("#queue li.box-chip")
    top = edge_server["defects"]["top edge"]
    page.click(f"#queue li[data-defect-id='{top}']")
    _wait_drawn(page, top)
    assert _on_screen(page, "#image-canvas") and _on_screen(page, "#btn-zoom-in")

    def label_of(defect_id: int) -> dict | None:
        drawn = page.evaluate(DRAWN)
        return next((lab for lab in drawn["labels"] if lab["defectId"] == defect_id), None)

    before = label_of(top)["box"]
    page.keyboard.press("+")
    page.wait_for_function("document.querySelector('#image-canvas').dataset.zoom === '1.5'")
    zoomed = label_of(top)["box"]
    assert zoomed[2] - zoomed[0] > before[2] - before[0]  # the box grew with the image
    x, y = _to_page(page, 100, 12)
    page.mouse.move(x, y)
    page.mouse.wheel(0, -300)
    page.wait_for_function("Number(document.querySelector('#image-canvas').dataset.zoom) > 1.5")
    wheel_box = label_of(top)["box"]
    _drag(page, _to_page(page, 60, 60), _to_page(page, 90, 80))  # pan right and down
    panned = label_of(top)
    assert panned is not None and panned["box"] != wheel_box
    for lab in page.evaluate(DRAWN)["labels"]:
        assert lab["x"] >= 0 and lab["x"] + lab["width"] <= CANVAS_W, lab
        assert lab["y"] >= 0 and lab["y"] + lab["height"] <= CANVAS_H, lab
    _shot(page, f"review-zoom-{_viewport_id(viewport)}")
    page.keyboard.press("0")
    page.wait_for_function("document.querySelector('#image-canvas').dataset.zoom === '1'")
    assert label_of(top)["box"] == before
    assert page.js_errors == []  # type: ignore[attr-defined]


def test_the_queue_refreshes_by_itself(edge_server, page):
    """A frame stored after the page loaded appears in the queue without any click."""
    _sign_in(page, edge_server["base"] + "/#review", edge_server["key"], "op-edges")
    page.wait_for_selector("#queue li.card")
    assert page.locator("#queue li.card").count() == 1
    late = SeedInspection(8, "L9", "S9", "P-LATE", datetime.now(UTC), [SeedDefect(2, 0.5, (10, 10, 50, 50))])
    new_id = seed_database(edge_server["url"], edge_server["data_dir"], [late])[8]
    page.wait_for_selector(f"#queue li.card[data-inspection-id='{new_id}']", timeout=20_000)
    assert page.locator("#queue li.card").count() == 2
    assert page.js_errors == []  # type: ignore[attr-defined]


def test_live_view_shows_each_camera_and_how_the_model_sees_it(neu_sample: Path, tmp_path: Path,
                                                               page) -> None:
    """A real service with two simulator cameras (one whole frame at imgsz 640, one tiled): the Live
    view shows a tile per camera with its state and the model input it gets."""
    from app.db.migrate import upgrade
    from app.settings import Settings

    images = neu_sample / "images"
    cams = tmp_path / "cameras.yaml"
    cams.write_text(f"""
pipeline: {{workers: 1, max_batch: 2}}
cameras:
  - {{id: cam-native, line: L1, station: top, imgsz: 640, images: never,
     tracking: {{enabled: true, mm_per_px: 0.2, looks: null, min_score: 0.4}},
     simulator: {{fps: 2, width: 640, height: 480, images: "{images}"}}}}
  - {{id: cam-tiled, line: L1, station: bottom, tile_size: 256, tile_overlap: 32, images: never,
     simulator: {{fps: 2, width: 640, height: 480, images: "{images}"}}}}
""")
    url = f"sqlite:///{tmp_path / 'live.db'}"
    upgrade(url)
    settings = Settings(database_url=url, model_path=SHIPPED_INT8, data_dir=tmp_path / "data",
                        auth_enabled=False, providers=["cpu"], intra_op_threads=1, cameras_file=cams)
    with serving(settings) as base:
        page.goto(f"{base}/#live")
        page.wait_for_selector("[data-camera='cam-native'] .tile-model")
        assert page.inner_text("[data-camera='cam-native'] .tile-model") == "model input 640 px"
        assert page.inner_text("[data-camera='cam-tiled'] .tile-model") == "tiles 256 px, overlap 32"
        assert "L1 / top" in page.inner_text("[data-camera='cam-native']")
        # storage per camera (images: never: nothing stored) and the free space of the data disk
        assert page.inner_text("[data-camera='cam-native'] .tile-storage") == "stored 0 B: 0 frames, 0 crops"
        assert " free" in page.inner_text("#cameras-updated")
        # a tracked camera: its line speed and the defects in view (GET /cameras: tracking)
        assert re.search(r"mm/s|line stopped", page.inner_text("[data-camera='cam-native'] .tile-tracks"))
        assert "defect(s) in view" in page.inner_text("[data-camera='cam-native'] .tile-tracks")
        assert page.query_selector("[data-camera='cam-tiled'] .tile-tracks") is None
        # with a minimum score, a defect in view shows its score so far against it
        cameras = {c["id"]: c for c in httpx.get(f"{base}/api/v1/cameras").json()["cameras"]}
        assert cameras["cam-native"]["tracking"]["min_score"] == 0.4
        shown = page.evaluate("""tracksText({motion: {stopped: false, speed_px_s: 80}, min_score: 0.4,
            tracks: {active: 2, ended: 5}, active_tracks: [
              {class_name: "scratches", frames_seen: 3, score: 0.314},
              {class_name: "patches", frames_seen: 9, score: 1.02}]})""")
        assert shown == ("80.0 px/s · 2 defect(s) in view: scratches (3, score 0.31 < 0.40), "
                         "patches (9, score 1.02 ≥ 0.40) · 5 passed")
        # the part under a camera, however the line said it, and its end
        assert page.query_selector("[data-camera='cam-native'] .tile-part") is None
        part_url = f"{base}/api/v1/cameras/cam-native/part"
        assert httpx.put(part_url, json={"part_id": "COIL-7"}).status_code == 200
        page.wait_for_selector("[data-camera='cam-native'] .tile-part", timeout=20_000)
        assert page.inner_text("[data-camera='cam-native'] .tile-part") == "part COIL-7"
        assert "set by api:" in page.get_attribute("[data-camera='cam-native'] .tile-part", "title")
        _shot(page, "live-cameras")
        assert httpx.delete(part_url).status_code == 200
        page.wait_for_selector("[data-camera='cam-native'] .tile-part", state="detached", timeout=20_000)
        assert page.js_errors == []  # type: ignore[attr-defined]


# -- box labels on the review canvas ---------------------------------------------------------------
DRAWN = """() => { const c = document.querySelector('#image-canvas');
  return { width: c.width, height: c.height, labels: c.drawnLabels }; }"""
# [r, g, b] of each canvas pixel at [x, y]
PIXELS = """points => { const ctx = document.querySelector('#image-canvas').getContext('2d');
  return points.map(([x, y]) => Array.from(ctx.getImageData(x, y, 1, 1).data.slice(0, 3))); }"""
# [r, g, b] of every pixel in the rectangle, row by row
REGION = """r => { const d = document.querySelector('#image-canvas').getContext('2d')
  .getImageData(r.x, r.y, r.width, r.height).data;
  const out = []; for (let i = 0; i < d.length; i += 4) out.push([d[i], d[i + 1], d[i + 2]]); return out; }"""
WHITE = (255, 255, 255)


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def _near(pixel, colour: tuple[int, int, int], tolerance: int = 6) -> bool:
    return all(abs(p - c) <= tolerance for p, c in zip(pixel, colour, strict=True))


def _contrast(a: str, b: str) -> float:
    """WCAG 2 contrast ratio of two "#rrggbb" colours."""
    def luminance(colour: str) -> float:
        lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in
               (v / 255 for v in _rgb(colour))]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def _canvas_box(seed: SeedDefect) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = (round(v * CANVAS_SCALE) for v in seed.box)
    return max(0, x1), max(0, y1), min(CANVAS_W - 1, x2), min(CANVAS_H - 1, y2)


def test_the_dashboard_places_labels_by_the_same_rules_as_the_annotated_image(page) -> None:
    """app.js placeLabel against app/annotate.py place_label over boxes everywhere in two frame sizes,
    including full-height boxes, boxes at every edge and labels wider than the frame; and every class
    colour gets the label text colour (black or white) that contrasts more with it."""
    # app.js alone on an empty page of an http origin (it reads localStorage); the page has loaded
    # before the script comes, so the dashboard does not start and only its functions are there
    page.route("http://dashboard.test/", lambda route: route.fulfill(
        body="<!doctype html><title>app.js</title>", content_type="text/html"))
    page.goto("http://dashboard.test/")
    page.add_script_tag(path=str(APP_JS))
    cases = []
    for fw, fh in ((640, 480), (200, 200)):
        for bx1 in (0, 37, fw // 2, fw - 60, fw - 2):
            for by1 in (0, 5, 30, fh // 2, fh - 3):
                for bh in (1, 40, fh):
                    for tw in (30, 150, 2 * fw):
                        box = (bx1, by1, min(fw - 1, bx1 + 50), min(fh - 1, by1 + bh))
                        cases.append((box, tw, 14, 4, fw, fh))
    got = page.evaluate("cases => cases.map((c) => placeLabel(...c))", cases)
    want = [place_label(*case) for case in cases]
    assert [(g["x1"], g["y1"], g["x2"], g["y2"], g["textX"], g["textY"]) for g in got] == \
        [(w.x1, w.y1, w.x2, w.y2, w.text_x, w.text_y) for w in want]

    colours = page.evaluate("[...PALETTE, REJECTED_COLOR]")
    chosen = page.evaluate("colours => colours.map(labelTextColor)", colours)
    for background, text in zip(colours, chosen, strict=True):
        assert text == max(("#000000", "#ffffff"), key=lambda t: _contrast(background, t)), background
        assert _contrast(background, text) >= 4.5, background  # WCAG AA for normal text


@pytest.mark.parametrize("viewport", [(1440, 900), (1024, 768)], ids=lambda v: f"{v[0]}x{v[1]}")
def test_box_labels_stay_whole_and_legible_and_the_selected_box_stands_out(edge_server, page,
                                                                           viewport) -> None:
    """A box as tall as the frame, one at the right edge and one at the top edge, each selected in
    turn: the canvas's drawnLabels record and its pixels show every label whole inside the canvas
    with the class and confidence, drawn in its class colour with contrasting text, and the selected
    box alone ringed in white over a dark halo."""
    page.set_viewport_size({"width": viewport[0], "height": viewport[1]})
    _sign_in(page, edge_server["base"] + "/#review", edge_server["key"], "op-edges")
    page.wait_for_selector("#queue li")
    ids = edge_server["defects"]
    for selected, selected_id in ids.items():
        page.click(f"#queue li[data-defect-id='{selected_id}']")
        _wait_drawn(page, selected_id)
        drawn = page.evaluate(DRAWN)
        assert (drawn["width"], drawn["height"]) == (CANVAS_W, CANVAS_H)
        labels = {label["defectId"]: label for label in drawn["labels"]}
        assert sorted(labels) == sorted(ids.values())

        for name, seed in EDGE_DEFECTS.items():
            label = labels[ids[name]]
            box = _canvas_box(seed)
            assert label["text"] == f"{NAMES[seed.class_id]} {seed.confidence:.2f}"
            assert label["selected"] is (name == selected)
            assert (label["ring"] is not None) is (name == selected)
            # the whole label, text included, inside the canvas
            x, y, w, h = label["x"], label["y"], label["width"], label["height"]
            assert 0 <= x <= x + w <= CANVAS_W and 0 <= y <= y + h <= CANVAS_H, (name, label)
            assert x <= label["textX"] and label["textX"] + label["textWidth"] <= x + w, (name, label)
            assert y < label["textY"] < y + h, (name, label)
            assert _contrast(label["background"], label["textColor"]) >= 4.5, (name, label)
            if name == "full height":  # no room above or below: inside the box's top
                assert y == 0 and x == box[0] and y + h < box[3]
            elif name == "right edge":  # above the box, shifted left so its right end is the canvas's
                assert x + w == CANVAS_W and x < box[0] and y + h - 1 <= box[1]
            else:  # a box at the top edge: below it
                assert y > box[3] and x == box[0]

            # pixels: the class colour behind the text (the padding row along the top, its centre
            # included), and letters in the chosen text colour
            background, text = _rgb(label["background"]), _rgb(label["textColor"])
            padding = page.evaluate(PIXELS, [[x + 1, y + 1], [x + w // 2, y + 1], [x + w - 2, y + 1]])
            assert all(_near(p, background) for p in padding), (name, padding, background)
            region = page.evaluate(REGION, {"x": x, "y": y, "width": w, "height": h})
            assert sum(_near(p, background) for p in region) > 0.5 * len(region), name
            assert sum(_near(p, text, 40) for p in region) >= 40, (name, label["textColor"])

            # the box outline in its class colour at the middle of its left side
            mid_y = (box[1] + box[3]) // 2
            [edge] = page.evaluate(PIXELS, [[box[0], mid_y]])
            if name == selected:
                assert _near(edge, background), (name, edge)
                ring = label["ring"]
                rx1, ry1, rx2, ry2 = ring["box"]
                assert ring["color"] == "#ffffff"
                assert rx1 - 1 >= 0 and ry1 - 1 >= 0 and rx2 <= CANVAS_W - 1 and ry2 <= CANVAS_H - 1
                ring_mid = (ry1 + ry2) // 2
                on_ring = page.evaluate(PIXELS, [[rx1 - 1, ring_mid], [rx1, ring_mid], [rx2 - 1, ring_mid],
                                                 [rx2, ring_mid]])
                assert all(_near(p, WHITE) for p in on_ring), (name, on_ring)
                # the dark halo on both sides of the ring
                halo = page.evaluate(PIXELS, [[rx1 + 2, ring_mid], [rx1 - 3, ring_mid]])
                assert all(max(p) <= 100 for p in halo), (name, halo)
            else:  # no ring around a box that is not selected
                [outside] = page.evaluate(PIXELS, [[box[0] - 5, mid_y]])
                assert not _near(outside, WHITE, 20), (name, outside)
        _shot(page, f"review-edges-{selected.replace(' ', '-')}-{viewport[0]}x{viewport[1]}")
    assert page.js_errors == []  # type: ignore[attr-defined]


@pytest.mark.parametrize("viewport", VIEWPORTS, ids=_viewport_id)
def test_live_shows_a_gallery_of_ng_frames_that_enlarge_and_yield_against_its_target(server, page, viewport):
    """Without cameras the Live view says so in plain words; the latest NG frames are a gallery, a click
    shows one large; each line's yield is coloured against INSPECT_YIELD_TARGET (0.95 by default)."""
    page.set_viewport_size({"width": viewport[0], "height": viewport[1]})
    _sign_in(page, server["base"] + "/#live", server["key"], "op-browser")
    page.wait_for_selector("#ng-gallery figure img[src]")
    ng = [s for s in build_seed(30) if s.defects]
    assert page.locator("#ng-gallery figure").count() == len(ng)
    newest = max(ng, key=lambda s: (s.captured_at, server["ids"][s.index]))
    first = page.locator("#ng-gallery figure").first
    assert int(first.get_attribute("data-inspection-id")) == server["ids"][newest.index]
    first.click()
    page.wait_for_selector("#frame-dialog[open]")
    page.wait_for_function("document.querySelector('#frame-dialog-img').naturalWidth > 0")
    shown = page.locator("#frame-dialog-img").bounding_box()
    assert shown["width"] >= 0.5 * viewport[0] or shown["height"] >= 0.5 * viewport[1]  # large
    _shot(page, f"live-enlarged-{_viewport_id(viewport)}")
    page.keyboard.press("Escape")
    page.wait_for_selector("#frame-dialog:not([open])", state="attached")

    empty = page.inner_text("#cameras-empty")
    assert empty.startswith("No camera is running on this station")
    # seed yield per line: L1 and L2 both well under 95 %
    for line in ("L1", "L2"):
        row = page.locator(f"#yield-lines .yield-row[data-line='{line}']")
        seeded = [s for s in build_seed(30) if s.line == line]
        assert (sum(not s.defects for s in seeded) / len(seeded)) < 0.90
        assert row.get_attribute("data-level") == "bad"
        assert row.locator(".target").count() == 1
    _shot(page, f"live-{_viewport_id(viewport)}")
    assert page.js_errors == []  # type: ignore[attr-defined]


@pytest.mark.parametrize("viewport", VIEWPORTS, ids=_viewport_id)
def test_an_alarm_shows_as_a_banner_until_an_operator_acknowledges_it(server, page, viewport):
    """An alarm raised by a rule appears on Live as a banner; Acknowledge stores who did it and the
    banner goes."""
    from app.ingest.alarms import AlarmMonitor
    from app.ingest.config import parse_cameras
    from app.inspection import CameraContext, inspect_frame

    page.set_viewport_size({"width": viewport[0], "height": viewport[1]})
    _sign_in(page, server["base"] + "/#live", server["key"], "op-browser")
    page.wait_for_selector("#today-kpis .kpi")
    assert page.locator("#alarm-banner").is_hidden()
    rules = parse_cameras("cameras:\n  - {id: cam-l1-s1, line: L1, source: 'folder:x'}\n"
                          "alarms:\n  - {id: l1-ng, line: L1, consecutive_ng: 1}\n").alarms
    db = Database(server["url"])
    try:
        frame = inspect_frame(np.full((80, 100, 3), 90, np.uint8),
                              Detections(np.array([[5.0, 5.0, 20.0, 20.0]], np.float32),
                                         np.array([0.9], np.float32), np.array([0]), NAMES),
                              model_version="v", context=CameraContext(camera_id="cam-l1-s1", line="L1"),
                              frame_uid="alarm-frame", captured_at=datetime.now(UTC), source="stream")
        [alarm] = AlarmMonitor(rules, db).observe([frame])
    finally:
        db.dispose()
    banner = page.locator(f"#alarm-banner [data-alarm-id='{alarm.id}']")
    banner.wait_for(timeout=20_000)  # the Live view polls every 5 s
    assert "1 NG frame in a row on line L1" in banner.inner_text()
    assert _on_screen(page, f"#alarm-banner [data-alarm-id='{alarm.id}'] button")
    _shot(page, f"live-alarm-{_viewport_id(viewport)}")
    banner.locator("button").click()
    page.wait_for_selector("#alarm-banner", state="hidden")
    db = Database(server["url"])
    try:
        with db.session() as session:
            stored = session.get(Alarm, alarm.id)
            assert stored.acknowledged_by == "op-browser" and stored.acknowledged_at is not None
    finally:
        db.dispose()
    assert page.js_errors == []  # type: ignore[attr-defined]


def test_review_shows_a_tracked_defects_frames(tiny_model_path: Path, tmp_path: Path, page) -> None:
    """A camera with tracking saw one defect in eight frames: Review shows one box, its track and a strip
    of the frames it was seen in, the best one (the box's own frame) outlined."""
    url = f"sqlite:///{tmp_path / 'dash.db'}"
    settings = _auth_settings(url, tiny_model_path, tmp_path / "data")
    db = Database(url)
    run_to_the_end(strip_camera(standing_strip(tmp_path / "frames"), tracking=True), tiny_model_path, db,
                   settings.data_dir)
    with db.session() as s:
        [track] = s.scalars(select(Track))
        track_id, best = track.id, track.inspection_id
    db.dispose()
    key = make_key(url, "operator", "op-browser")
    with serving(settings) as base:
        _sign_in(page, base + "/#review", key, "op-browser")
        page.wait_for_selector("#queue li.card")
        assert page.locator("#queue li.box-chip").count() == 1  # one physical defect, not eight boxes
        page.click(f"#queue li.card[data-inspection-id='{best}'] .card-head")
        page.wait_for_selector(f"#detail-facts dd:has-text('#{track_id} · seen in {len(LEVELS)} frame(s)')")
        page.wait_for_function("n => document.querySelectorAll('.track-strip .track-thumb img').length === n",
                               arg=len(LEVELS))
        assert page.get_attribute(".track-thumb.best", "data-inspection-id") == str(best)
        _shot(page, "review-tracked-defect")
        assert page.js_errors == []  # type: ignore[attr-defined]


# -- the Map view: the defect map along the material ------------------------------------------------
@dataclass(frozen=True)
class MapTrack:
    """A tracked defect to seed: class, where it lies on the material (px), the confidence of its best
    sighting, and its part."""

    class_id: int
    along_px: float
    across_px: float
    confidence: float
    part_id: str


COIL_MM_PER_PX = 0.5
COIL_TRACKS = [MapTrack(2, 900.0, 60.0, 0.81, "C-1001"), MapTrack(5, 150.0, 30.0, 0.66, "C-1001"),
               MapTrack(2, 2400.0, 90.0, 0.72, "C-1001"), MapTrack(1, 1600.0, 20.0, 0.93, "C-1001"),
               MapTrack(5, 3100.0, 70.0, 0.58, "C-1002")]
# a camera without calibration whose material runs along the frame's y
PLAIN_TRACKS = [MapTrack(0, 700.0, 50.0, 0.7, "C-7"), MapTrack(3, 300.0, 110.0, 0.6, "C-7")]


def _seed_tracks(url: str, data_dir: Path, journal_dir: Path, camera_id: str, tracks: list[MapTrack],
                 mm_per_px: float | None, along: int = 0) -> list[int]:
    """Each of ``tracks`` as a camera with tracking stores it, through the ingest writer: its best frame
    (a 160x120 frame with its one box, image stored) and its track record, the material having travelled
    so far along the frame's x (``along`` 0) or y (1) that the box lies at the track's position. The
    stored tracks' ids, in input order."""
    writer = DbWriter(Database(url), Journal(journal_dir), data_dir, batch_rows=64, batch_ms=10)
    writer.start()
    t0 = datetime.now(UTC) - timedelta(minutes=10)
    queued: list[Item | TrackItem] = []
    for k, t in enumerate(tracks):
        uid, seen = f"{camera_id}-{k}", t0 + timedelta(seconds=k)
        # the box is centred in its frame (80, 60); the travel puts it at the track's position
        size = (30.0, 20.0) if along == 0 else (20.0, 30.0)
        box = [80.0 - size[0] / 2, 60.0 - size[1] / 2, 80.0 + size[0] / 2, 60.0 + size[1] / 2]
        position = [t.along_px, t.across_px] if along == 0 else [t.across_px, t.along_px]
        result = inspect_frame(frame(k), Detections([box], [t.confidence], [t.class_id], NAMES),
                               model_version="seed-1", context=CameraContext(camera_id=camera_id, line="L1"),
                               part_id=t.part_id, source="stream", captured_at=seen, frame_uid=uid)
        apply_image_policy(result, "always")
        result.tracked = True
        queued += [Item(result), TrackItem(TrackRecord(
            track_uid=uid, track_number=k, camera_id=camera_id, line="L1", station=None, part_id=t.part_id,
            class_id=t.class_id, class_name=NAMES[t.class_id], confidence=t.confidence, frames_seen=3 + k,
            first_frame_uid=uid, best_frame_uid=uid, last_frame_uid=uid, started_at=seen, ended_at=seen,
            box=box, position_px=position, size_px=list(size), mm_per_px=mm_per_px, frame_uids=[uid]))]
    writer.submit_many(queued)
    deadline = time.monotonic() + 30
    while writer.tracks_committed < len(tracks):
        assert time.monotonic() < deadline, "the writer did not store the tracks"
        time.sleep(0.02)
    writer.stop()
    with writer.db.session() as session:
        ids = {row.track_uid: row.id for row in session.scalars(select(Track))}
    writer.db.dispose()
    return [ids[f"{camera_id}-{k}"] for k in range(len(tracks))]


@pytest.fixture
def map_server(tiny_model_path: Path, tmp_path: Path) -> Iterator[dict]:
    """uvicorn with COIL_TRACKS of camera coil-cam (calibrated, 0.5 mm/px, travelling along x) and
    PLAIN_TRACKS of plain-cam (pixels only, travelling along y), stored by the ingest writer."""
    url = f"sqlite:///{tmp_path / 'map.db'}"
    settings = _auth_settings(url, tiny_model_path, tmp_path / "data")
    journal = tmp_path / "journal"
    coil = _seed_tracks(url, settings.data_dir, journal, "coil-cam", COIL_TRACKS, COIL_MM_PER_PX)
    plain = _seed_tracks(url, settings.data_dir, journal, "plain-cam", PLAIN_TRACKS, None, along=1)
    key = make_key(url, "operator", "op-map")
    with serving(settings) as base:
        yield {"base": base, "url": url, "key": key, "coil": coil, "plain": plain}


def _marks(page) -> list[dict]:
    """The drawn marks: track id, class, position along, the centre of the rectangle, fill colour and
    accessible name, in the order the keyboard walks them."""
    return page.evaluate("""() => [...document.querySelectorAll('#map-band .map-mark')].map((m) => ({
        id: Number(m.dataset.trackId), cls: m.dataset.class, along: Number(m.dataset.along),
        x: Number(m.getAttribute('x')) + Number(m.getAttribute('width')) / 2,
        fill: m.getAttribute('fill'), label: m.getAttribute('aria-label'),
        tabindex: m.getAttribute('tabindex')}))""")


def _legend(page) -> dict[str, int]:
    return {li.get_attribute("data-class"): int(li.get_attribute("data-count"))
            for li in page.query_selector_all("#map-legend .map-legend-item")}


def _wait_marks(page, n: int) -> None:
    page.wait_for_function("n => document.querySelectorAll('#map-band .map-mark').length === n", arg=n)


def test_the_map_draws_tracked_defects_along_the_material_and_opens_one_in_review(map_server, page) -> None:
    """The Map view draws one camera's tracked defects along its material: one mark per track, left to
    right in order of position (mm with the calibration, px without, along whichever frame axis the
    material travelled), class colours and counts, a part filter; a click and the keyboard open a
    defect in Review."""
    _sign_in(page, map_server["base"] + "/#map", map_server["key"], "op-map")
    # no camera chosen, two cameras in the last hour: the one with more tracks, and a note saying so
    _wait_marks(page, len(COIL_TRACKS))
    assert "2 cameras" in page.inner_text("#map-note")
    marks = _marks(page)
    by_id = dict(zip(map_server["coil"], COIL_TRACKS, strict=True))
    assert sorted(m["id"] for m in marks) == sorted(map_server["coil"])
    assert [m["along"] for m in marks] == sorted(t.along_px * COIL_MM_PER_PX for t in COIL_TRACKS)
    assert [m["x"] for m in marks] == sorted(m["x"] for m in marks)  # the x order is the position order
    assert len({m["x"] for m in marks}) == len(marks)
    for m in marks:
        seed = by_id[m["id"]]
        assert m["fill"] == page.evaluate("id => classColor(id)", seed.class_id)
        assert m["cls"] == NAMES[seed.class_id]
        along_mm = seed.along_px * COIL_MM_PER_PX
        assert m["label"].startswith(f"{NAMES[seed.class_id]} at {along_mm:.1f} mm along")
        assert f"confidence {seed.confidence:.2f}" in m["label"]
    assert [m["tabindex"] for m in marks].count("0") == 1
    assert _legend(page) == {"patches": 2, "scratches": 2, "inclusion": 1}
    assert "along the material (mm)" in page.text_content("#map-band")
    assert "across (mm)" in page.text_content("#map-band")
    _shot(page, "map")

    # a part (coil): its defects only
    page.fill("#map-filters input[name=part_id]", "C-1002")
    page.click("#map-filters button[type=submit]")
    _wait_marks(page, 1)
    assert _legend(page) == {"scratches": 1}
    page.fill("#map-filters input[name=part_id]", "")

    # the other camera: pixels, its material along the frame's y
    page.fill("#map-filters input[name=camera_id]", "plain-cam")
    page.click("#map-filters button[type=submit]")
    _wait_marks(page, len(PLAIN_TRACKS))
    marks = _marks(page)
    assert [m["along"] for m in marks] == sorted(t.along_px for t in PLAIN_TRACKS)
    assert [m["x"] for m in marks] == sorted(m["x"] for m in marks)
    assert "along the material (px)" in page.text_content("#map-band")
    assert page.is_hidden("#map-note")
    assert "along the frame's y" in page.inner_text("#map-summary")

    # a click opens the defect in Review: its frame selected, the box drawn
    page.fill("#map-filters input[name=camera_id]", "coil-cam")
    page.click("#map-filters button[type=submit]")
    _wait_marks(page, len(COIL_TRACKS))
    inclusion = map_server["coil"][3]
    track = _track(map_server["url"], inclusion)
    page.click(f"#map-band .map-mark[data-track-id='{inclusion}']")
    page.wait_for_selector(f"#queue li.card.selected[data-inspection-id='{track['inspection_id']}']")
    _wait_drawn(page, track["defect_id"])
    assert page.evaluate("location.hash") == "#review"

    # the keyboard: Tab to the band, End walks to the last defect along the material, Enter opens it
    page.goto(map_server["base"] + "/#map")
    _wait_marks(page, len(COIL_TRACKS))
    page.focus("#map-filters button[type=submit]")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.classList.contains('map-mark')")
    page.keyboard.press("End")
    last = max(zip(COIL_TRACKS, map_server["coil"], strict=True), key=lambda p: p[0].along_px)[1]
    assert page.evaluate("document.activeElement.dataset.trackId") == str(last)
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Enter")
    track = _track(map_server["url"], last)
    page.wait_for_selector(f"#queue li.card.selected[data-inspection-id='{track['inspection_id']}']")
    _wait_drawn(page, track["defect_id"])
    assert page.js_errors == []  # type: ignore[attr-defined]


def _track(url: str, track_id: int) -> dict:
    db = Database(url)
    try:
        with db.session() as session:
            row = session.get(Track, track_id)
            defect = session.scalars(select(Defect).where(Defect.track_id == track_id)).one()
            return {"inspection_id": row.inspection_id, "defect_id": defect.id}
    finally:
        db.dispose()


def test_the_map_says_when_no_tracked_defect_matches(server, page) -> None:
    """Frames without tracking, no tracks: the Map view shows its empty state, no band, no legend."""
    _sign_in(page, server["base"] + "/#map", server["key"], "op-browser")
    page.wait_for_selector("#map-empty:not([hidden])")
    assert "No tracked defects" in page.inner_text("#map-empty")
    assert page.locator("#map-band .map-mark").count() == 0
    assert page.is_hidden("#map-scroll") and _legend(page) == {}
    assert page.js_errors == []  # type: ignore[attr-defined]


def test_the_map_draws_thousands_of_defects_and_says_when_the_answer_is_cut(tiny_model_path: Path,
                                                                            tmp_path: Path, page) -> None:
    """More tracked defects than GET /tracks answers at once: the map draws the first 5000 (every one a
    mark, the keyboard walking them in order), the legend counts them, and a note says the answer was
    cut; a larger scale widens the band."""
    url = f"sqlite:///{tmp_path / 'many.db'}"
    settings = _auth_settings(url, tiny_model_path, tmp_path / "data")
    t0 = datetime.now(UTC) - timedelta(minutes=30)
    [best] = seed_database(url, settings.data_dir, [SeedInspection(0, "L1", "S1", "C-9", t0)]).values()
    n = MAX_MAP + 1
    db = Database(url)
    with db.session() as session:  # rows as the writer stores them, in one statement (5001 tracks)
        session.execute(insert(Track), [dict(
            track_uid=f"many-{k}", camera_id="cam-l1-s1", line="L1", station="S1", part_id="C-9",
            inspection_id=best, track_number=k, class_id=k % 3, class_name=NAMES[k % 3], confidence=0.6,
            frames_seen=4, first_frame_uid="seed-000", best_frame_uid="seed-000", last_frame_uid="seed-000",
            frame_uids=["seed-000"], started_at=t0 + timedelta(milliseconds=k), ended_at=t0,
            x1=60.0, y1=50.0, x2=80.0, y2=70.0, position_x_px=70.0 + 40.0 * k,
            position_y_px=60.0 + (k * 37) % 50,
            width_px=20.0, height_px=20.0, mm_per_px=0.25) for k in range(n)])
        session.commit()
    db.dispose()
    key = make_key(url, "operator", "op-map")
    with serving(settings) as base:
        _sign_in(page, base + "/#map", key, "op-map")
        _wait_marks(page, MAX_MAP)
        assert f"More than {MAX_MAP}" in page.inner_text("#map-note")
        assert sum(_legend(page).values()) == MAX_MAP
        along = [m["along"] for m in _marks(page)]
        assert along == sorted(along) and len(set(along)) == MAX_MAP
        assert "along the material (m)" in page.text_content("#map-band")  # 50 m of material: metres
        width = float(page.get_attribute("#map-band", "width"))
        page.select_option("#map-filters select[name=zoom]", "10")
        page.wait_for_function("w => Number(document.querySelector('#map-band').getAttribute('width')) "
                               "> 5 * w", arg=width)
        _wait_marks(page, MAX_MAP)
        _shot(page, "map-many")
        assert page.js_errors == []  # type: ignore[attr-defined]

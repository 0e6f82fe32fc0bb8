"""The operator dashboard in Debian's chromium (driven by Playwright) against a real uvicorn server with a
temporary SQLite database: enter the API key, review defects with the keyboard, check the rows; the box
labels on the review canvas, read back from the canvas's drawnLabels record and from its pixels, stay
whole inside the canvas and legible, and the selected box stands out.

Set INSPECT_TEST_SCREENSHOTS=<dir> to keep screenshots of the views."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from mes_helpers import NAMES, SeedDefect, SeedInspection, build_seed, make_key, seed_database
from sqlalchemy import select

from app.annotate import place_label
from app.db.models import Defect, DefectReview
from app.db.session import Database

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("INSPECT_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
APP_JS = REPO_ROOT / "app" / "dashboard" / "app.js"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _serving(settings) -> Iterator[str]:
    """The real app under uvicorn on a free 127.0.0.1 port; yields its base URL."""
    import uvicorn

    from app.main import create_app

    port = _free_port()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not srv.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(10)


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
    with _serving(settings) as base:
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
    with _serving(settings) as base:
        yield {"base": base, "key": key, "inspection_id": inspection_id, "defects": defects}


@pytest.fixture
def page():
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"chromium not installed at {CHROMIUM} "
                    "(apt-get install chromium, or set INSPECT_TEST_CHROMIUM)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            pg = browser.new_page(viewport={"width": 1440, "height": 900})
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

def test_review_a_defect_with_the_keyboard(server, page):
    _sign_in(page, server["base"] + "/#review", server["key"], "op-browser")

    page.wait_for_selector("#queue li")
    first_id = int(page.get_attribute("#queue li[data-index='0']", "data-defect-id"))
    page.wait_for_selector(f"#detail-id:has-text('#{first_id}')")
    _wait_drawn(page, first_id)
    _shot(page, "review")

    page.keyboard.press("a")
    page.wait_for_selector(f"#review-message:has-text('#{first_id} confirmed')")
    defect, audit = _defect(server["url"], first_id)
    assert (defect.review_status, defect.reviewed_by) == ("confirmed", "op-browser")
    assert [(a.actor, a.action, a.before_status, a.after_status) for a in audit] == \
        [("op-browser", "confirm", "pending", "confirmed")]

    # the confirmed defect left the pending queue; J moves down, K back up, 3 reclassifies to class 3
    assert page.locator(f"#queue li[data-defect-id='{first_id}']").count() == 0
    second_id = int(page.get_attribute("#queue li[data-index='0']", "data-defect-id"))
    page.wait_for_selector(f"#detail-id:has-text('#{second_id}')")
    page.keyboard.press("j")
    third_id = int(page.get_attribute("#queue li[data-index='1']", "data-defect-id"))
    page.wait_for_selector(f"#detail-id:has-text('#{third_id}')")
    page.keyboard.press("k")
    page.wait_for_selector(f"#detail-id:has-text('#{second_id}')")
    page.keyboard.press("3")
    page.wait_for_selector(f"#review-message:has-text('#{second_id} reclassified')")
    defect, audit = _defect(server["url"], second_id)
    assert (defect.review_status, defect.reviewed_class_name) == ("reclassified", NAMES[2])
    assert [(a.action, a.after_class_name) for a in audit] == [("reclassify", NAMES[2])]

    to_reject = int(page.get_attribute("#queue li[data-index='0']", "data-defect-id"))
    _wait_drawn(page, to_reject)
    page.keyboard.press("r")
    page.wait_for_selector(f"#review-message:has-text('#{to_reject} rejected')")
    rejected_id = int(page.get_attribute("#queue li[data-index='0']", "data-defect-id"))
    assert rejected_id != second_id
    # the history of a reviewed defect shows its audit trail
    page.select_option("#review-filters select[name=review_status]", "")
    page.click("#review-filters button[type=submit]")
    page.wait_for_selector(f"#queue li[data-defect-id='{second_id}']")
    page.click(f"#queue li[data-defect-id='{second_id}']")
    page.wait_for_selector("#history li:has-text('op-browser: reclassify')")

    page.goto(server["base"] + "/#stats")
    page.wait_for_selector("#stats-kpis .kpi")
    page.wait_for_function("window.Chart && Object.keys(Chart.instances).length >= 2")
    _shot(page, "stats")
    page.goto(server["base"] + "/#live")
    page.wait_for_selector("#yield-lines .yield-row")
    page.wait_for_selector("#today-kpis .kpi")
    page.wait_for_selector("#cameras-empty:has-text('Camera ingest is not running')")
    _shot(page, "live")
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
     simulator: {{fps: 2, width: 640, height: 480, images: "{images}"}}}}
  - {{id: cam-tiled, line: L1, station: bottom, tile_size: 256, tile_overlap: 32, images: never,
     simulator: {{fps: 2, width: 640, height: 480, images: "{images}"}}}}
""")
    url = f"sqlite:///{tmp_path / 'live.db'}"
    upgrade(url)
    model = REPO_ROOT / "models" / "weights" / "defect-yolov5s-cbam-int8.onnx"
    settings = Settings(database_url=url, model_path=model, data_dir=tmp_path / "data", auth_enabled=False,
                        providers=["cpu"], intra_op_threads=1, cameras_file=cams)
    with _serving(settings) as base:
        page.goto(f"{base}/#live")
        page.wait_for_selector("[data-camera='cam-native'] .tile-model")
        assert page.inner_text("[data-camera='cam-native'] .tile-model") == "model input 640 px"
        assert page.inner_text("[data-camera='cam-tiled'] .tile-model") == "tiles 256 px, overlap 32"
        assert "L1 / top" in page.inner_text("[data-camera='cam-native']")
        # storage per camera (images: never: nothing stored) and the free space of the data disk
        assert page.inner_text("[data-camera='cam-native'] .tile-storage") == "stored 0 B: 0 frames, 0 crops"
        assert " free" in page.inner_text("#cameras-updated")
        _shot(page, "live-cameras")
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

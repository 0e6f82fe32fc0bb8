"""The operator dashboard in Debian's chromium (driven by Playwright) against a real uvicorn server with a
temporary SQLite database: enter the API key, review defects with the keyboard, check the rows.

Set INSPECT_TEST_SCREENSHOTS=<dir> to keep screenshots of the three views."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from mes_helpers import NAMES, build_seed, make_key, seed_database
from sqlalchemy import select

from app.db.models import Defect, DefectReview
from app.db.session import Database

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("INSPECT_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tiny_model_path: Path, tmp_path: Path) -> Iterator[dict]:
    """uvicorn on a free 127.0.0.1 port: auth on, a migrated temp SQLite DB, seeded inspections with
    stored images, and an operator key."""
    import uvicorn

    from app.db.migrate import upgrade
    from app.main import create_app
    from app.settings import Settings

    url = f"sqlite:///{tmp_path / 'dash.db'}"
    upgrade(url)
    settings = Settings(database_url=url, model_path=tiny_model_path, data_dir=tmp_path / "data",
                        auth_enabled=True, providers=["cpu"], intra_op_threads=1)
    # recent data, so today's yield and the 24-hour stats have something to show
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    ids = seed_database(url, settings.data_dir, build_seed(30, t0=start))
    key = make_key(url, "operator", "op-browser")
    port = _free_port()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield {"base": f"http://127.0.0.1:{port}", "url": url, "key": key, "ids": ids}
    finally:
        srv.should_exit = True
        thread.join(10)


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


def test_review_a_defect_with_the_keyboard(server, page):
    page.goto(server["base"] + "/#review")
    # auth is on and the browser has no key yet: the dialog asks for one
    page.wait_for_selector("#key-dialog[open]")
    page.fill("#key-input", server["key"])
    page.click("#key-save")
    page.wait_for_selector("#who:has-text('op-browser')")

    page.wait_for_selector("#queue li")
    first_id = int(page.get_attribute("#queue li[data-index='0']", "data-defect-id"))
    page.wait_for_selector(f"#detail-id:has-text('#{first_id}')")
    page.wait_for_function("document.querySelector('#image-note').textContent === ''")  # image drawn
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

    page.keyboard.press("r")
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
    page.wait_for_selector("#yield-lines")
    page.wait_for_timeout(300)
    _shot(page, "live")
    assert page.js_errors == []  # type: ignore[attr-defined]


def test_live_view_shows_each_camera_and_how_the_model_sees_it(neu_sample: Path, tmp_path: Path,
                                                               page) -> None:
    """A real service with two simulator cameras (one whole frame at imgsz 640, one tiled): the Live
    view shows a tile per camera with its state and the model input it gets."""
    import uvicorn
    from conftest import REPO_ROOT

    from app.db.migrate import upgrade
    from app.main import create_app
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
    port = _free_port()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not srv.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.05)
        page.goto(f"http://127.0.0.1:{port}/#live")
        page.wait_for_selector("[data-camera='cam-native'] .tile-model")
        assert page.inner_text("[data-camera='cam-native'] .tile-model") == "model input 640 px"
        assert page.inner_text("[data-camera='cam-tiled'] .tile-model") == "tiles 256 px, overlap 32"
        assert "L1 / top" in page.inner_text("[data-camera='cam-native']")
        _shot(page, "live-cameras")
        assert page.js_errors == []  # type: ignore[attr-defined]
    finally:
        srv.should_exit = True
        thread.join(10)

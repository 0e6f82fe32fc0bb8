"""app.reviewed_export straight on the database (SQLite and PostgreSQL) and the stored image files:
what goes into the YOLO dataset (reviewed classes, no rejected boxes, background images), what stays out
(pending images unless include_pending, images never reviewed, missing files, reported), and a split that
depends on the frame uid alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from db_helpers import NAMES, Frame, store_frames

from app.db.models import Defect
from app.errors import UserError
from app.reviewed_export import export_reviewed, split_of
from app.reviews import ReviewRequest, review_defect

T0 = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)
BOX = (10.0, 10.0, 30.0, 30.0)  # in a 100 x 80 frame: centre (0.2, 0.25), size (0.2, 0.25)
BOX2 = (50.0, 40.0, 90.0, 80.0)  # centre (0.7, 0.75), size (0.4, 0.5)


def label(class_id: int, box: tuple[float, float, float, float]) -> str:
    x1, y1, x2, y2 = box
    w, h = 100, 80
    cx, cy = (x1 + x2) / 2 / w, (y1 + y2) / 2 / h
    return f"{class_id} {cx:.6f} {cy:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"


@pytest.fixture
def seeded(db, tmp_path):
    """Frames with stored images, reviewed as named; returns the data dir and frame_uid -> image path."""
    data_dir = tmp_path / "data"
    frames = [
        Frame("kept", T0, [("patches", 0.9, BOX), ("crazing", 0.8, BOX2)], line="L1"),
        Frame("all-rejected", T0 + timedelta(minutes=1), [("patches", 0.9, BOX)], line="L1"),
        Frame("half-pending", T0 + timedelta(minutes=2), [("patches", 0.9, BOX), ("scratches", 0.7, BOX2)],
              line="L2"),
        Frame("never-reviewed", T0 + timedelta(minutes=3), [("crazing", 0.9, BOX)], line="L1"),
        Frame("ok-frame", T0 + timedelta(minutes=4), [], line="L1"),
        Frame("file-gone", T0 + timedelta(minutes=5), [("patches", 0.9, BOX)], line="L1"),
    ]
    stored = store_frames(db, frames, data_dir=data_dir, image_policy="always")
    defects = {x.row.frame_uid: sorted(d.id for d in x.row.defects) for x in stored}
    plan = [("kept", 0, ReviewRequest("confirm")), ("kept", 1, ReviewRequest("reclassify", "scratches")),
            ("all-rejected", 0, ReviewRequest("reject")), ("half-pending", 0, ReviewRequest("confirm")),
            ("file-gone", 0, ReviewRequest("confirm"))]
    with db.session() as s:
        for uid, k, request in plan:
            review_defect(s, s.get(Defect, defects[uid][k]), request, "op", NAMES)
        s.commit()
    paths = {x.row.frame_uid: x.row.image_path for x in stored}
    (data_dir / paths["file-gone"]).unlink()
    return data_dir, paths


def exported(out: Path) -> dict[str, tuple[str, list[str]]]:
    """frame_uid -> (split, label lines), read from the dataset's folders."""
    found = {}
    for split in ("train", "val"):
        for txt in sorted((out / "labels" / split).glob("*.txt")):
            assert (out / "images" / split / f"{txt.stem}.jpg").is_file()
            found[txt.stem] = (split, txt.read_text(encoding="utf-8").splitlines())
    return found


def test_reviewed_images_with_their_reviewed_classes(db, seeded, tmp_path):
    data_dir, paths = seeded
    out = tmp_path / "out"
    with db.session() as s:
        report = export_reviewed(s, data_dir, out, NAMES, val_fraction=0.5)
    files = exported(out)
    assert sorted(files) == ["all-rejected", "kept"]
    assert files["kept"][1] == [label(1, BOX), label(2, BOX2)]  # confirmed patches; crazing -> scratches
    assert files["all-rejected"][1] == []  # a background image
    assert {uid: split for uid, (split, _) in files.items()} == {uid: split_of(uid, 0.5) for uid in files}
    assert (out / "images" / files["kept"][0] / "kept.jpg").read_bytes() == \
        (data_dir / paths["kept"]).read_bytes()
    assert (report.boxes, report.background, report.skipped_pending) == (2, 1, 1)
    assert report.images["train"] + report.images["val"] == 2
    assert report.missing_images == [paths["file-gone"]]
    assert "left out 1 images with pending defects" in report.format()
    assert f"whose stored image is missing, e.g. {paths['file-gone']}" in report.format()
    doc = yaml.safe_load((out / "data.yaml").read_text(encoding="utf-8"))
    assert doc == {"path": ".", "train": "train.txt", "val": "val.txt", "nc": 3, "names": list(NAMES)}
    listed = {split: (out / f"{split}.txt").read_text(encoding="utf-8").splitlines()
              for split in ("train", "val")}
    for uid, (split, _) in files.items():
        assert f"images/{split}/{uid}.jpg" in listed[split]


def test_include_pending_keeps_pending_boxes_with_their_detected_class(db, seeded, tmp_path):
    data_dir, _ = seeded
    out = tmp_path / "out"
    with db.session() as s:
        report = export_reviewed(s, data_dir, out, NAMES, include_pending=True)
    files = exported(out)
    assert sorted(files) == ["all-rejected", "half-pending", "kept", "never-reviewed"]
    assert files["half-pending"][1] == [label(1, BOX), label(2, BOX2)]
    assert files["never-reviewed"][1] == [label(0, BOX)]
    assert (report.boxes, report.background, report.skipped_pending) == (5, 1, 0)


def test_the_split_depends_on_the_frame_uid_alone(db, seeded, tmp_path):
    data_dir, _ = seeded
    splits = []
    for k, (line, pending) in enumerate([(None, False), (None, True), ("L1", False)]):
        with db.session() as s:
            export_reviewed(s, data_dir, tmp_path / f"out{k}", NAMES, line=line, include_pending=pending,
                            val_fraction=0.5)
        splits.append({uid: split for uid, (split, _) in exported(tmp_path / f"out{k}").items()})
    assert splits[2] == splits[0] == {uid: splits[1][uid] for uid in splits[0]}
    uids = [f"frame-{i}" for i in range(2000)]
    assert [split_of(u, 0.2) for u in uids] == [split_of(u, 0.2) for u in uids]
    assert 0.15 < sum(split_of(u, 0.2) == "val" for u in uids) / len(uids) < 0.25
    assert {split_of(u, 0.0) for u in uids} == {"train"} and {split_of(u, 1.0) for u in uids} == {"val"}


def test_one_split_empty_reuses_an_image_of_the_other(db, seeded, tmp_path):
    data_dir, _ = seeded
    out = tmp_path / "out"
    with db.session() as s:
        report = export_reviewed(s, data_dir, out, NAMES, val_fraction=0.0)
    assert report.images == {"train": 2, "val": 0}
    train = (out / "train.txt").read_text(encoding="utf-8").splitlines()
    assert len(train) == 2 and (out / "val.txt").read_text(encoding="utf-8").splitlines() == train[:1]


def test_refusals(db, seeded, tmp_path):
    data_dir, _ = seeded
    with db.session() as s:
        with pytest.raises(UserError, match="nothing to export: .*1 left out for pending defects, "
                                            "1 with missing images"):
            export_reviewed(s, data_dir, tmp_path / "a", NAMES, start=T0 + timedelta(minutes=2))
        full = tmp_path / "full"
        full.mkdir()
        (full / "x").write_text("", encoding="utf-8")
        with pytest.raises(UserError, match="output folder exists and is not empty"):
            export_reviewed(s, data_dir, full, NAMES)
        with pytest.raises(UserError, match="no class names"):
            export_reviewed(s, data_dir, tmp_path / "b", ())
        with pytest.raises(UserError, match="has class 'scratches', which is not a model class"):
            export_reviewed(s, data_dir, tmp_path / "c", ("crazing", "patches"))


def test_export_reviewed_cli_in_another_directory_names_the_missing_database(tmp_path, monkeypatch, capsys):
    """Run where there is no database: one line naming the file it looked for, and no ./data left."""
    from app.cli import main

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("INSPECT_DATABASE_URL", raising=False)
    assert main(["dataset", "export-reviewed", "--out", "out", "--names", "a,b"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"no database file at {elsewhere / 'data' / 'inspect.db'}" in err
    assert list(elsewhere.iterdir()) == []

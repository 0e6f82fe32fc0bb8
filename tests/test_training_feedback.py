"""What training prints for a person: progress lines off a terminal and the anchors table."""

from __future__ import annotations

from models.cli import anchor_table
from models.progress import quarter_marks


def test_progress_off_a_terminal_falls_on_each_quarter_of_an_epoch() -> None:
    assert quarter_marks(100) == {25, 50, 75}  # the epoch's own line reports the 100th batch
    assert quarter_marks(6) == {2, 3, 4} and quarter_marks(2) == {1}
    assert quarter_marks(1) == set()


def test_the_anchor_report_reads_as_a_table() -> None:
    row = {"bpr": 0.9, "anchors_above_threshold": 2.5, "fitness": 0.6,
           "anchors": [[10, 13], [16, 30], [33, 23], [30, 61], [62, 45], [59, 119], [116, 90], [156, 198],
                       [373, 326]]}
    report = {"boxes": 2641, "imgsz": 256, "anchor_t": 4.0, "current_from": "yolov5s-cbam.yaml",
              "default": row, "fitted": {**row, "bpr": 1.0, "fitness": 0.8}, "would_adopt": True}
    lines = anchor_table(report).splitlines()
    assert len(lines) == 5 and lines[0].startswith("2641 training boxes at 256 px")
    assert lines[2].split()[:4] == ["current", "0.9000", "2.500", "0.6000"]
    assert "10,13 16,30 33,23 | 30,61 62,45 59,119 | 116,90 156,198 373,326" in lines[2]
    assert lines[3].startswith("fitted") and "would be adopted" in lines[4]

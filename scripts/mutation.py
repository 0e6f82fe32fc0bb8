"""Mutation testing of the core record path, one module at a time against its own tests.

    python scripts/mutation.py                    # every module below
    python scripts/mutation.py postprocess codec  # chosen modules
    python scripts/mutation.py --list             # the modules and their test selections
    python scripts/mutation.py --report           # the scores of the last run, recounted

Each module runs mutmut 3 in its own work folder (.mutation/<module>/, git-ignored) with a generated
[tool.mutmut] table: only that module is mutated and only its selected test files run. mutmut copies the
tree into .mutation/<module>/mutants; each run starts from a fresh copy (--keep reuses the verdicts, but
mutmut then does not re-test a survivor against tests added since). The score printed per module is
killed / (all mutants - equivalent), a timed-out mutant counting as killed; a mutant is cut at 3x its
tests' time, and the mutants cut so are run once more at 15x, so that a slow machine does not pass a
surviving mutant off as a timeout. The mutants judged equivalent, and why, are listed in EQUIVALENT
below and in docs/testing.md. PostgreSQL variants of the DB tests skip unless INSPECT_TEST_POSTGRES_URL
is set; the recorded scores are SQLite-only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / ".mutation"
NEU_DET_ENV = "INSPECT_TEST_NEU_DET"


@dataclass(frozen=True)
class Target:
    source: str
    tests: tuple[str, ...]


TARGETS: dict[str, Target] = {
    "postprocess": Target(
        "app/inference/postprocess.py",
        ("tests/test_postprocess_boundaries.py", "tests/test_mut_postprocess.py"),
    ),
    "codec": Target(
        "app/inspection/codec.py",
        (
            "tests/test_journal_roundtrip.py::test_a_journal_record_gives_back_every_field_of_its_result",
            "tests/test_journal_roundtrip.py::test_a_record_from_before_image_ext_existed_reads_back_with_its_default",
            "tests/test_mut_codec.py",
        ),
    ),
    "rules": Target(
        "app/inspection/rules.py",
        ("tests/test_inspection.py", "tests/test_mut_rules.py"),
    ),
    "auth": Target("app/auth.py", ("tests/test_auth.py", "tests/test_mut_auth.py")),
    "queries": Target(
        "app/db/queries.py",
        # test_api_mes.py reaches the same functions through HTTP, at several seconds a mutant: too slow
        ("tests/test_mut_queries.py",),
    ),
    "journal": Target(
        "app/ingest/journal.py",
        (
            "tests/test_ingest_writer.py::test_journal_is_bounded",
            "tests/test_ingest_writer.py::test_journal_folder_is_held_by_one_journal_at_a_time",
            "tests/test_ingest_writer.py::test_replay_of_an_earlier_run_skips_rows_already_committed",
            "tests/test_mut_journal.py",
        ),
    ),
    "writer": Target(
        "app/ingest/writer.py",
        # test_ingest_writer.py and test_ingest_batch_buffer.py wait on the running writer's timers (seconds
        # a mutant, a stalled thread costs a timeout); test_mut_writer.py drives the same paths step by step
        ("tests/test_mut_writer.py",),
    ),
    "store": Target(
        "app/inspection/store.py",
        # test_journal_roundtrip.py (Hypothesis, both databases) takes ~15 s a mutant: too slow
        ("tests/test_inspection.py", "tests/test_mut_store.py"),
    ),
}

# mutant name -> why no test can tell it from the original. Names are mutmut's and stay stable while the
# function's source is unchanged; a changed function is re-mutated and this table is re-checked.
_P = "app.inference.postprocess."
_Q = "app.db.queries."
_R = "app.inspection.rules.x_roi_mask__mutmut_"
_S = "app.inspection.store."
_J = "app.ingest.journal.xǁJournalǁ"
_W = "app.ingest.writer.xǁ"
_W_ZIP = "zip without strict: _commit gives one entry per item, and a partial replay cuts the items to those"
_W_TRACKS_ZIP = "zip without strict: persist_tracks gives one entry per track, and the retry one per item"
_W_MOVE_ZIP = ("zip without strict: the names before and after come from the same result, its frame kept or "
               "renamed and its crop_count unchanged, so the two lists are equally long")
_WM = "app.ingest.writer.x_move_written_files__mutmut_"
EQUIVALENT: dict[str, str] = {
    # rules.roi_mask
    _R + "59": "contour reshape(-1, 2) instead of (-1, 1, 2): cv2.pointPolygonTest reads both layouts",
    _R + "62": "reshape(-2, 1, 2): numpy takes any negative size as 'infer'",
    _R + "66": "np.array of Python bools without dtype=bool is a bool array (the list is never empty)",
    _R + "68": "the same, dtype dropped",
    _R + "71": "pointPolygonTest measureDist None instead of False: both mean 'no distance'",
    _R + "77": "measureDist True: a signed distance, whose sign (>= 0 inside or on the edge) is the same",
    _R + "82": "zip(strict=None) over cx, cy: both come from the same boxes, always equally long",
    _R + "85": "zip without strict: the same",
    _R + "86": "zip(strict=False): the same",
    # journal
    _J + "__init____mutmut_16": "_current '' instead of None: only read after a segment was opened",
    _J + "seal__mutmut_3": "the same in seal(): _fh is None right after, so _current is not read",
    _J + "_iter_lines__mutmut_16": "return instead of break as the last statement of a generator",
    # writer
    _W + "BatchBufferǁput__mutmut_17":
        "remaining < 0 for <= 0: at exactly 0, wait(0) returns at once and the next pass refuses",
    _W + "BatchBufferǁput__mutmut_28":
        "len(items) + at: the slice items[at:at + n] ends at the list's end, the loop the same",
    _W + "BatchBufferǁtake_batch__mutmut_13":
        "remaining < 0 for <= 0: at exactly 0, wait(0) returns at once and the next pass ends the window",
    _W + "DbWriterǁ__init____mutmut_27":
        "first retry due at 1.0, not 0.0, on time.monotonic(): it counts from boot, due either way",
    _W + "DbWriterǁ_db_error__mutmut_8":
        "_set_db(None, ...) for False: _set_db tests up for truth, None reads as False",
    _W + "DbWriterǁ_set_db__mutmut_4":
        "error or 'XXXX': _set_db(False, ...) always gets _db_error's text, which is never empty",
    "app.ingest.writer.x_other_image_uid__mutmut_6":
        ("'XXXX' for '' as the camera of a result without one: only camera frames are re-keyed, and "
         "a camera frame always names its camera"),
    _W + "DbWriterǁ_persist__mutmut_2":
        "range(4) for range(3): the third conflict is raised (attempt == 2), the fourth pass never runs",
    _W + "DbWriterǁ_persist__mutmut_6":
        "load_rows=None: persist_results tests it for truth, None reads as False",
    _W + "DbWriterǁ_reject__mutmut_6":
        "rejected.jsonl in the locale's encoding: json.dumps escapes non-ASCII, the line is ASCII",
    _W + "DbWriterǁ_reject__mutmut_9":
        "the same, encoding left out",
    _W + "DbWriterǁ_reject__mutmut_16":
        "'UTF-8' for 'utf-8': the same codec",
    _W + "DbWriterǁ_report__mutmut_3": _W_ZIP,
    _W + "DbWriterǁ_report__mutmut_6": _W_ZIP,
    _W + "DbWriterǁ_report__mutmut_7": _W_ZIP,
    _W + "DbWriterǁ_report__mutmut_18": _W_ZIP,
    _W + "DbWriterǁ_report__mutmut_21": _W_ZIP,
    _W + "DbWriterǁ_report__mutmut_22": _W_ZIP,
    _W + "DbWriterǁ_run__mutmut_1":
        "held = None for []: held is only tested for truth",
    _W + "DbWriterǁ_run__mutmut_4":
        "retry due at > _next_retry, not >=: they differ only when the clock reads _next_retry exactly",
    _W + "DbWriterǁ_run__mutmut_6":
        "the same after a held batch is stored",
    _W + "DbWriterǁ_run__mutmut_8":
        "held batch given up at >= the stop deadline, not >: the same, only at the exact clock reading",
    _W + "DbWriterǁ_store__mutmut_4":
        "commit tried at > _next_retry, not >=: the same, only at the exact clock reading",
    _W + "DbWriterǁ_commit_tracks__mutmut_36": _W_TRACKS_ZIP,
    _W + "DbWriterǁ_commit_tracks__mutmut_39": _W_TRACKS_ZIP,
    _W + "DbWriterǁ_commit_tracks__mutmut_40": _W_TRACKS_ZIP,
    _WM + "8": ("the old names are taken also when the files are not written yet: the function returns "
                "before it reads them, and taking them only reads the result"),
    _WM + "17": _W_MOVE_ZIP,
    _WM + "20": _W_MOVE_ZIP,
    _WM + "22": _W_MOVE_ZIP,
    # postprocess
    _P + "x_candidates__mutmut_14": "ultralytics pre-filter best >= t: the strict score > t filter follows",
    _P + "x_candidates__mutmut_21": "objectness pre-filter obj >= t: score = obj * cls <= obj, and the "
                                    "strict score > t filter follows",
    _P + "x_detect_layout__mutmut_21": "d2 != 6 + nc: every shape it sends elsewhere ends as 'ultralytics' "
                                       "by the anchors-outnumber-channels rule",
    _P + "x_match_detections__mutmut_14": "one side without dtype=float: the other side is float64 and numpy "
                                          "promotes the IoU to float64 anyway",
    _P + "x_match_detections__mutmut_16": "the same, dtype left out",
    _P + "x_match_detections__mutmut_18": "the same for the other side",
    _P + "x_match_detections__mutmut_20": "the same for the other side, dtype left out",
    _P + "x_nms__mutmut_8": "kind='STABLE': numpy reads the sort kind case-insensitively",
    _P + "x_nms__mutmut_19": "first window 4 / max_det (so 1024): any window gives the same keeps, "
                             "only the time changes",
    _P + "x_nms__mutmut_20": "first window 5 * max_det: the same",
    _P + "x_nms__mutmut_21": "first window at least 1025: the same",
    _P + "x_nms__mutmut_31": "len(kept) > max_det never holds: the window grows to all boxes, same keeps",
    _P + "x_nms__mutmut_39": "window growth 5x instead of 4x: the same keeps",
    _P + "x_xywh_to_xyxy__mutmut_6": "slice 2:5 of a 4-column array is 2:4",
    _P + "x_xywh_to_xyxy__mutmut_16": "slice 2:5 of a 4-column array is 2:4",
    # queries
    _Q + "x_encode_cursor__mutmut_23": "rstrip also of 'X': a cursor is JSON ending in '}', so its last "
                                       "base64 character is '9', 'Q' or '0', never 'X'",
    _Q + "x_decode_cursor__mutmut_7": "(+len % 4) padding: base64 decoding ignores the surplus '='",
    _Q + "x_decode_cursor__mutmut_20": "'Z' not replaced: Python 3.11's fromisoformat reads 'Z' itself",
    _Q + "x_decode_cursor__mutmut_21": "the same ('z' replaced instead)",
    _Q + "x_defects_select__mutmut_3": "join without ON: SQLAlchemy infers it from the one foreign key",
    _Q + "x_defects_select__mutmut_5": "the same, the ON argument left out",
    _Q + "x_fetch_page__mutmut_20": "limit(None): all rows read, the page and its cursor are the same",
    _Q + "x_fetch_page__mutmut_28": "limit + 2: one more row read, the page and its cursor are the same",
    _Q + "x_fetch_page__mutmut_31": "limit(None) for defects: the same",
    _Q + "x_fetch_page__mutmut_39": "limit + 2 for defects: the same",
    _Q + "x__csv_row__mutmut_6": "defects loaded for the CSV row, which has defect_count only: same text",
    _Q + "x__csv_row__mutmut_8": "the same, defects argument left out",
    _Q + "x_iter_csv__mutmut_7": "lineterminator left out: the csv module's default is '\\r\\n'",
    _Q + "x_iter_csv__mutmut_38": "None written as itself: the csv module writes None as an empty field",
    # store
    _S + "x__defect_rows__mutmut_19": "zip(strict=None): Detections refuses arrays of unequal length",
    _S + "x__defect_rows__mutmut_23": "zip without strict: the same",
    _S + "x__defect_rows__mutmut_24": "zip(strict=False): the same",
    _S + "x_persist_results__mutmut_32": "zip(strict=None): _persist_once returns one Stored per result",
    _S + "x_persist_results__mutmut_35": "zip without strict: the same",
    _S + "x_persist_results__mutmut_36": "zip(strict=False): the same",
    _S + "x__persist_once__mutmut_96": "webhook subscribers asked also without a new NG frame: no event "
                                       "follows from them (only new NG frames enqueue)",
    _S + "x__persist_once__mutmut_111": "rows of the new NG frames loaded also without subscribers: unused",
    # auth
    "app.auth.x_hash_key__mutmut_4": "'UTF-8' for 'utf-8': the same codec",
    "app.auth.x_ensure_demo_key__mutmut_6": "'UTF-8' for 'utf-8': the same codec",
    "app.auth.x_ensure_demo_key__mutmut_39": "'UTF-8' for 'utf-8': the same codec",
    "app.auth.x_ensure_demo_key__mutmut_4": "the locale's encoding for a key that is ASCII by construction",
    "app.auth.x_ensure_demo_key__mutmut_33": "the locale's encoding for a key that is ASCII by construction",
    "app.auth.x_ensure_demo_key__mutmut_35": "the locale's encoding for a key that is ASCII by construction",
    "app.auth.x_generate_key__mutmut_5": "token_urlsafe(None) draws the default 32 bytes",
    "app.auth.xǁKeyCacheǁput__mutmut_6": "popitem(last=None) for last=False: None reads as False, the "
                                         "oldest entry leaves",
    "app.auth.x_list_keys__mutmut_3": ("order_by(None): on SQLite (the recorded runs) a table scan returns "
                                       "rows in rowid = id order; test_mut_auth's list test kills it on "
                                       "PostgreSQL, where the revoked (updated) row moves to the heap's end"),
}

# mutmut cuts a mutant's tests at (their time + 1 s) x this, in wall-clock time: a mutant that hangs (an
# endless CSV loop) is cut at 3x, not mutmut's 15x ...
TIMEOUT_MULTIPLIER = 3.0
# ... and every mutant cut so is tested once more at 15x: on a loaded machine a mutant whose tests all pass
# can take over 3x their measured time, and would count as killed
RECHECK_MULTIPLIER = 15.0

KILLED = {1, 3, 36, -24, 24, 152, 255}  # mutmut's "killed" and "timeout" exit codes
SURVIVED = {0}
TIMEOUT = {36, -24, 24, 152, 255}


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(item) for item in items) + "]"


def prepare(name: str, target: Target, timeout_multiplier: float = TIMEOUT_MULTIPLIER) -> Path:
    """The module's work folder: links to the tree and a pyproject.toml holding only [tool.mutmut]."""
    work = WORK / name
    work.mkdir(parents=True, exist_ok=True)
    for entry in ("app", "models", "tests"):
        link = work / entry
        if not link.exists():
            link.symlink_to(REPO / entry)
    tests = [t for t in target.tests if (REPO / t.partition("::")[0]).exists()]
    (work / "pyproject.toml").write_text(
        "[tool.mutmut]\n"
        f"source_paths = {_toml_list(['app'])}\n"
        f"only_mutate = {_toml_list([target.source])}\n"
        f"also_copy = {_toml_list(['models', 'tests'])}\n"
        f"pytest_add_cli_args_test_selection = {_toml_list(tests)}\n"
        f"pytest_add_cli_args = {_toml_list(['-p', 'no:cacheprovider', '-q'])}\n"
        f"timeout_multiplier = {timeout_multiplier}\n",
        encoding="utf-8",
    )
    return work


def tally(work: Path, target: Target) -> dict[str, object]:
    meta = json.loads((work / "mutants" / (target.source + ".meta")).read_text(encoding="utf-8"))
    codes: dict[str, int | None] = meta["exit_code_by_key"]
    equivalent = sorted(m for m in codes if m in EQUIVALENT)
    killed = sorted(m for m, c in codes.items() if c in KILLED and m not in EQUIVALENT)
    survived = sorted(m for m, c in codes.items() if c not in KILLED and m not in EQUIVALENT)
    countable = len(codes) - len(equivalent)
    return {
        "mutants": len(codes),
        "killed": len(killed),
        "timed_out": sum(1 for c in codes.values() if c in TIMEOUT),
        "survived": len(survived),
        "equivalent": len(equivalent),
        "score": round(100 * len(killed) / countable, 1) if countable else 100.0,
        "surviving": [f"{m} ({codes[m]})" for m in survived],
        "stale_equivalent": [m for m in EQUIVALENT if m.startswith(_prefix(target)) and m not in codes],
        # a listed mutant that a test fails on is no equivalent: its number now names another change
        "killed_equivalent": [m for m in equivalent if codes[m] in KILLED and codes[m] not in TIMEOUT],
    }


def _prefix(target: Target) -> str:
    return target.source.removesuffix(".py").replace("/", ".") + "."


def run(name: str, target: Target, keep: bool) -> dict[str, object]:
    work = prepare(name, target)
    if not keep:  # mutmut keeps a survivor's verdict when tests are added; a fresh copy re-tests it
        shutil.rmtree(work / "mutants", ignore_errors=True)
    env = dict(os.environ)
    env.setdefault(NEU_DET_ENV, str(REPO.parent / "shared" / "datasets" / "neu-det"))
    mutmut = Path(sys.executable).with_name("mutmut")
    started = time.monotonic()
    subprocess.run([str(mutmut), "run"], cwd=work, env=env, check=True)
    first_pass = tally(work, target)["timed_out"]
    if first_pass:  # a changed timeout setting makes mutmut re-test the timed-out mutants, and only those
        prepare(name, target, RECHECK_MULTIPLIER)
        subprocess.run([str(mutmut), "run"], cwd=work, env=env, check=True)
    return {**tally(work, target), "timed_out_at_3x": first_pass, "wall_s": round(time.monotonic() - started)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", help=f"default: all of {', '.join(TARGETS)}")
    parser.add_argument("--keep", action="store_true",
                        help="reuse earlier verdicts (faster; a survivor is not re-tested against new tests)")
    parser.add_argument("--list", action="store_true", help="print the modules and their tests")
    parser.add_argument("--report", action="store_true",
                        help="print the scores of the last run again (after editing EQUIVALENT), run nothing")
    args = parser.parse_args()
    names = args.modules or list(TARGETS)
    unknown = [name for name in names if name not in TARGETS]
    if unknown:
        parser.error(f"unknown module(s) {', '.join(unknown)}; choose from {', '.join(TARGETS)}")
    if args.list:
        for name in names:
            print(f"{name}: {TARGETS[name].source} <- {' '.join(TARGETS[name].tests)}")
        return 0
    failed = 0
    for name in names:
        if args.report:
            result = {**tally(WORK / name, TARGETS[name]), "timed_out_at_3x": "-", "wall_s": "-"}
        else:
            result = run(name, TARGETS[name], args.keep)
        print(f"== {name} ({TARGETS[name].source})")
        for key in ("mutants", "killed", "timed_out_at_3x", "timed_out", "survived", "equivalent", "score",
                    "wall_s"):
            print(f"   {key}: {result[key]}")
        for mutant in result["surviving"]:
            print(f"   survived: {mutant}")
        for mutant in result["stale_equivalent"]:
            print(f"   equivalent entry no longer generated: {mutant}")
        for mutant in result["killed_equivalent"]:
            print(f"   listed as equivalent but killed (check the entry): {mutant}")
        failed += float(result["score"]) < 90
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The docs stay true: configuration tables match the schemas, every field explains itself, the README
stays short and every link into the docs leads somewhere."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from pydantic import BaseModel

from app.config_reference import (
    main,
    model_rows,
    references,
    render_table,
    replace_between_markers,
    settings_rows,
    write_documents,
)
from app.ingest.config import CamerasFile
from app.settings import DEFAULT_MODEL_PATH, Settings

ROOT = Path(__file__).resolve().parents[1]
README_LIMIT = 12 * 1024


def _models_under(model: type[BaseModel]) -> list[type[BaseModel]]:
    """``model`` and every pydantic model its fields hold (``X``, ``X | None``, ``list[X]``)."""
    found = [model]
    for field in model.model_fields.values():
        stack = [field.annotation]
        while stack:
            tp = stack.pop()
            if isinstance(tp, type) and issubclass(tp, BaseModel) and tp not in found:
                found.extend(m for m in _models_under(tp) if m not in found)
            stack.extend(getattr(tp, "__args__", ()))
    return found


@pytest.mark.parametrize("root_model", [Settings, CamerasFile])
def test_every_field_has_a_description(root_model: type[BaseModel]) -> None:
    missing = [f"{m.__name__}.{name}" for m in _models_under(root_model)
               for name, field in m.model_fields.items() if not (field.description or "").strip()]
    assert missing == [], f"fields without description=...: {missing}"


def test_every_table_row_has_a_description() -> None:
    rows = settings_rows() + model_rows(CamerasFile)
    assert {r.key for r in rows if not r.description} == set()
    keys = {r.key for r in rows}
    assert {"`INSPECT_DATABASE_URL`", "`pipeline.writer.batch_rows`", "`cameras[].reconnect.max_s`",
            "`cameras[].simulator.fps`"} <= keys


def test_model_path_default_does_not_name_this_checkout() -> None:
    row = next(r for r in settings_rows() if r.key == "`INSPECT_MODEL_PATH`")
    assert row.default == f"`<package dir>/models/weights/{DEFAULT_MODEL_PATH.name}`"


@pytest.mark.parametrize("reference", references(), ids=lambda r: r.name)
def test_committed_tables_match_the_schema(reference) -> None:
    committed = reference.doc.read_text(encoding="utf-8")
    assert render_table(reference) in committed
    assert replace_between_markers(committed, reference) == committed, (
        f"{reference.doc.name} is out of date: run python -m app.config_reference --write")


def test_write_regenerates_stale_tables(tmp_path: Path) -> None:
    for reference in references():
        text = reference.doc.read_text(encoding="utf-8")
        stale = text.replace(render_table(reference), "| Variable | Type |\n|---|---|\n| `OLD` | x |")
        (tmp_path / reference.doc.name).write_text(stale, encoding="utf-8")
    changed = write_documents(tmp_path)
    assert sorted(p.name for p in changed) == ["cameras.md", "configuration.md"]
    for reference in references():
        assert (tmp_path / reference.doc.name).read_text(encoding="utf-8") == reference.doc.read_text(
            encoding="utf-8")
    assert write_documents(tmp_path) == []


def test_a_document_without_markers_is_refused(tmp_path: Path) -> None:
    for reference in references():
        shutil.copy(reference.doc, tmp_path / reference.doc.name)
    (tmp_path / "cameras.md").write_text("# no markers\n", encoding="utf-8")
    with pytest.raises(ValueError, match="markers"):
        write_documents(tmp_path)


def test_check_command_passes_on_the_committed_docs(capsys) -> None:
    assert main(["--check"]) == 0
    assert capsys.readouterr().err == ""


def test_readme_is_short() -> None:
    size = len((ROOT / "README.md").read_bytes())
    assert size <= README_LIMIT, f"README.md is {size} bytes; move detail into docs/"


def test_readme_starts_with_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    first_block = text[text.index("```sh"):]
    assert first_block.index("make run") < first_block.index("make test") < first_block.index("```\n")
    for doc in ("api", "cameras", "configuration", "training", "deployment", "benchmarks", "model-card",
                "architecture"):
        assert f"(docs/{doc}.md)" in text


@pytest.mark.parametrize("doc", [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))],
                         ids=lambda p: p.name)
def test_relative_links_lead_somewhere(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    broken = []
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if "://" in target or target.startswith("mailto:"):
            continue
        if not (doc.parent / target).exists():
            broken.append(target)
    assert broken == []


@pytest.mark.parametrize("doc", ["benchmarks.md", "model-card.md"])
def test_docs_describe_the_present(doc: str) -> None:
    text = (ROOT / "docs" / doc).read_text(encoding="utf-8")
    diary = re.findall(r"(?i)\bsession \d|\bthis session\b|\bprevious machine\b|\bearlier sessions?\b", text)
    assert diary == []

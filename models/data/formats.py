"""``data.yaml`` parsing (ultralytics/YOLOv5 layout) and the image -> label path convention."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from app.errors import UserError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp"})


@dataclass
class DataSpec:
    """A parsed data.yaml: absolute image paths per split, class names."""

    root: Path
    train: list[Path]
    val: list[Path]
    test: list[Path] | None
    names: list[str]
    nc: int
    yaml_path: Path


def label_path_for(image_path: str | os.PathLike[str]) -> Path:
    """Label file of an image: the last ``images`` path component becomes ``labels``, suffix ``.txt``.

    ``/d/images/train/a.jpg`` -> ``/d/labels/train/a.txt``. Without an ``images`` component the label
    sits next to the image.
    """
    p = Path(image_path)
    parts = list(p.parts)
    for i in range(len(parts) - 2, -1, -1):  # never the file name itself
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def list_images(folder: Path) -> list[Path]:
    """All images under ``folder`` (recursive), sorted."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and is_image(p))


def read_image_list(list_file: Path, root: Path) -> list[Path]:
    """Image paths listed one per line in ``list_file``; relative paths are relative to ``root``.

    Blank lines and ``#`` comments are skipped. Entries must exist.
    """
    out: list[Path] = []
    try:
        text = list_file.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{list_file}: cannot read image list: {exc.strerror or exc}") from exc
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        p = Path(line)
        if not p.is_absolute():
            p = root / p
        if not is_image(p):
            raise UserError(f"{list_file}:{lineno}: not an image file name (jpg/jpeg/png/bmp): {line!r}")
        if not p.is_file():
            raise UserError(f"{list_file}:{lineno}: image not found: {p}")
        out.append(p)
    return out


def resolve_split(value: Any, root: Path, yaml_path: Path, key: str) -> list[Path]:
    """Resolve a split entry (folder, .txt list, single image, or a list of those) to image paths."""
    entries = value if isinstance(value, list) else [value]
    paths: list[Path] = []
    for entry in entries:
        if not isinstance(entry, str) or not entry.strip():
            raise UserError(f"{yaml_path}: key '{key}': expected a folder or a .txt list path, got {entry!r}")
        p = Path(entry)
        if not p.is_absolute():
            p = root / p
        if p.is_dir():
            found = list_images(p)
            if not found:
                raise UserError(f"{yaml_path}: key '{key}': no images (jpg/jpeg/png/bmp) under {p}")
            paths.extend(found)
        elif p.is_file() and p.suffix.lower() == ".txt":
            paths.extend(read_image_list(p, root))
        elif p.is_file() and is_image(p):
            paths.append(p)
        else:
            raise UserError(f"{yaml_path}: key '{key}': {p} is neither a folder nor a .txt image list")
    if not paths:
        raise UserError(f"{yaml_path}: key '{key}': the split holds no images")
    return paths


def parse_names(value: Any, yaml_path: Path) -> list[str]:
    if isinstance(value, list):
        names = value
    elif isinstance(value, dict):
        try:
            ids = sorted(int(k) for k in value)
        except (TypeError, ValueError) as exc:
            raise UserError(f"{yaml_path}: key 'names': dict keys must be integer class ids") from exc
        if ids != list(range(len(ids))):
            raise UserError(f"{yaml_path}: key 'names': class ids must be 0..{len(ids) - 1} without gaps")
        by_id = {int(k): v for k, v in value.items()}
        names = [by_id[i] for i in ids]
    else:
        raise UserError(f"{yaml_path}: key 'names': expected a list or an {{id: name}} mapping")
    if not names:
        raise UserError(f"{yaml_path}: key 'names': no classes")
    out = []
    for n in names:
        if not isinstance(n, str | int) or not str(n).strip():
            raise UserError(f"{yaml_path}: key 'names': invalid class name {n!r}")
        out.append(str(n))
    if len(set(out)) != len(out):
        raise UserError(f"{yaml_path}: key 'names': duplicate class names")
    return out


def load_data_yaml(path: str | os.PathLike[str]) -> DataSpec:
    """Parse a data.yaml (``path``, ``train``, ``val``, optional ``test``, ``names``, optional ``nc``)."""
    yaml_path = Path(path).resolve()
    try:
        raw = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"{yaml_path}: cannot read data file: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise UserError(f"{yaml_path}{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(raw, dict):
        raise UserError(f"{yaml_path}: expected a mapping with keys path, train, val, names")

    root_value = raw.get("path")
    if root_value is None:
        root = yaml_path.parent
    elif isinstance(root_value, str):
        root = Path(root_value)
        if not root.is_absolute():
            root = (yaml_path.parent / root).resolve()
        if not root.is_dir():
            raise UserError(f"{yaml_path}: key 'path': dataset root {root} is not a folder")
    else:
        raise UserError(f"{yaml_path}: key 'path': expected a folder path, got {root_value!r}")

    if "names" not in raw:
        raise UserError(f"{yaml_path}: key 'names' is missing")
    names = parse_names(raw["names"], yaml_path)
    nc = len(names)
    if raw.get("nc") is not None:
        try:
            declared = int(raw["nc"])
        except (TypeError, ValueError) as exc:
            raise UserError(f"{yaml_path}: key 'nc': not an integer: {raw['nc']!r}") from exc
        if declared != nc:
            raise UserError(f"{yaml_path}: key 'nc': nc={declared} but 'names' lists {nc} classes")

    splits: dict[str, list[Path] | None] = {}
    for key in ("train", "val", "test"):
        value = raw.get(key)
        if value is None or value == "":
            if key != "test":
                raise UserError(f"{yaml_path}: key '{key}' is missing")
            splits[key] = None
            continue
        splits[key] = resolve_split(value, root, yaml_path, key)

    return DataSpec(
        root=root,
        train=splits["train"] or [],
        val=splits["val"] or [],
        test=splits["test"],
        names=names,
        nc=nc,
        yaml_path=yaml_path,
    )


def write_data_yaml(out_path: Path, root: Path, train: str, val: str, names: list[str],
                    test: str | None = None) -> Path:
    """Write a data.yaml (used by the importers); ``root`` is stored relative to the yaml if possible."""
    try:
        root_value = os.path.relpath(root, out_path.parent)
    except ValueError:  # different drives on Windows
        root_value = str(root)
    doc: dict[str, Any] = {"path": root_value, "train": train, "val": val}
    if test is not None:
        doc["test"] = test
    doc["nc"] = len(names)
    doc["names"] = list(names)
    out_path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return out_path

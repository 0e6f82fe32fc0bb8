"""Convert Pascal VOC XML and COCO JSON annotations into a YOLO dataset (labels + list files + data.yaml).

Output layout under ``out_dir``: ``images/NAME`` (symlinks to the originals by default, or copies),
``labels/NAME.txt``, ``train.txt``, ``val.txt`` and ``data.yaml``. The images must sit under an
``images`` folder because the label of an image is found by replacing that path component.
"""

from __future__ import annotations

import json
import os
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.errors import UserError
from models.data.formats import IMAGE_SUFFIXES, write_data_yaml
from models.data.labels import image_hw

LINK_MODES = ("symlink", "copy", "hardlink")


@dataclass
class _Item:
    rel: Path  # image path relative to images_dir
    src: Path  # the original image
    boxes: list[tuple[int, float, float, float, float]]  # cls cx cy w h normalised


def _place_image(src: Path, dst: Path, link: str) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    if link == "symlink":
        try:
            os.symlink(src.resolve(), dst)
            return
        except OSError:  # e.g. Windows without the privilege: fall back to a copy
            pass
    elif link == "hardlink":
        try:
            os.link(src, dst)
            return
        except OSError:
            pass
    shutil.copy2(src, dst)


def _write_dataset(items: list[_Item], out_dir: Path, names: list[str], val_fraction: float, seed: int,
                   link: str) -> Path:
    if link not in LINK_MODES:
        raise UserError(f"unknown link mode {link!r} (use one of {', '.join(LINK_MODES)})")
    if not 0.0 <= val_fraction < 1.0:
        raise UserError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    if not items:
        raise UserError("nothing to import: no annotated images found")
    out_dir.mkdir(parents=True, exist_ok=True)
    rels: list[str] = []
    for item in items:
        img_dst = out_dir / "images" / item.rel
        _place_image(item.src, img_dst, link)
        lab = (out_dir / "labels" / item.rel).with_suffix(".txt")
        lab.parent.mkdir(parents=True, exist_ok=True)
        lab.write_text("".join(f"{c} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n" for c, cx, cy, w, h in item.boxes),
                       encoding="utf-8")
        rels.append((Path("images") / item.rel).as_posix())
    rels.sort()
    order = np.random.default_rng(seed).permutation(len(rels))
    n_val = round(len(rels) * val_fraction)
    val_idx = set(order[:n_val].tolist())
    train = [r for k, r in enumerate(rels) if k not in val_idx]
    val = [r for k, r in enumerate(rels) if k in val_idx] or train
    (out_dir / "train.txt").write_text("".join(f"{r}\n" for r in train), encoding="utf-8")
    (out_dir / "val.txt").write_text("".join(f"{r}\n" for r in val), encoding="utf-8")
    return write_data_yaml(out_dir / "data.yaml", out_dir, "train.txt", "val.txt", names)


def _yolo_box(x1: float, y1: float, x2: float, y2: float, w: int, h: int
              ) -> tuple[float, float, float, float]:
    return ((x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h)


# -- Pascal VOC ------------------------------------------------------------------------------------
def _text(el: ET.Element, tag: str, where: str) -> str:
    child = el.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise UserError(f"{where}: missing <{tag}>")
    return child.text.strip()


def _number(el: ET.Element, tag: str, where: str) -> float:
    value = _text(el, tag, where)
    try:
        return float(value)
    except ValueError as exc:
        raise UserError(f"{where}: <{tag}> is not a number: {value!r}") from exc


def _find_image(images_dir: Path, filename: str | None, stem: str) -> Path | None:
    if filename:
        p = images_dir / filename
        if p.is_file():
            return p
        stem = Path(filename).stem
    for suffix in sorted(IMAGE_SUFFIXES):
        for cand in (images_dir / f"{stem}{suffix}", images_dir / f"{stem}{suffix.upper()}"):
            if cand.is_file():
                return cand
    return None


def _parse_voc(xml_path: Path) -> tuple[str | None, int | None, int | None, list[tuple[Any, ...]]]:
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as exc:
        line = exc.position[0] if getattr(exc, "position", None) else 0
        raise UserError(f"{xml_path}:{line}: invalid XML: {exc}") from exc
    except OSError as exc:
        raise UserError(f"{xml_path}: cannot read: {exc.strerror or exc}") from exc
    fn = root.findtext("filename")
    size = root.find("size")
    w = h = None
    if size is not None:
        try:
            w = int(float(size.findtext("width") or 0)) or None
            h = int(float(size.findtext("height") or 0)) or None
        except ValueError as exc:
            raise UserError(f"{xml_path}: <size>: width/height are not numbers") from exc
    objects = []
    for k, obj in enumerate(root.findall("object"), 1):
        where = f"{xml_path}: <object> #{k}"
        name = _text(obj, "name", where)
        where = f"{xml_path}: <object> #{k} ({name})"
        bnd = obj.find("bndbox")
        if bnd is None:
            raise UserError(f"{where}: missing <bndbox>")
        where += " <bndbox>"
        coords = tuple(_number(bnd, t, where) for t in ("xmin", "ymin", "xmax", "ymax"))
        objects.append((name, *coords))
    return (fn.strip() if fn else None), w, h, objects


def import_voc(annotations_dir: str | os.PathLike[str], images_dir: str | os.PathLike[str],
               out_dir: str | os.PathLike[str], names: Sequence[str] | None = None,
               val_fraction: float = 0.2, seed: int = 0, link: str = "symlink") -> Path:
    """Convert Pascal VOC XML files (1-based inclusive pixel corners) into a YOLO dataset.

    ``names`` fixes the class order (objects of other classes are an error); by default the sorted set of
    names found. ``val_fraction`` of the images (seeded shuffle) go to val.txt. Returns the data.yaml path.
    """
    ann_dir, img_dir, out = Path(annotations_dir), Path(images_dir), Path(out_dir)
    if not ann_dir.is_dir():
        raise UserError(f"{ann_dir}: annotations folder not found")
    if not img_dir.is_dir():
        raise UserError(f"{img_dir}: images folder not found")
    xmls = sorted(ann_dir.rglob("*.xml"))
    if not xmls:
        raise UserError(f"{ann_dir}: no .xml annotation files")
    parsed = [(x, *_parse_voc(x)) for x in xmls]
    if names is None:
        class_names = sorted({o[0] for *_, objs in parsed for o in objs})
        if not class_names:
            raise UserError(f"{ann_dir}: no <object> elements in any annotation")
    else:
        class_names = [n.strip() for n in names]
    index = {n: i for i, n in enumerate(class_names)}
    items: list[_Item] = []
    for xml_path, fn, w, h, objs in parsed:
        img = _find_image(img_dir, fn, xml_path.stem)
        if img is None:
            raise UserError(f"{xml_path}: <filename>: image {fn or xml_path.stem} not found in {img_dir}")
        if w is None or h is None:
            h, w = image_hw(img)
        boxes = []
        for k, (name, xmin, ymin, xmax, ymax) in enumerate(objs, 1):
            where = f"{xml_path}: <object> #{k} ({name})"
            if name not in index:
                raise UserError(f"{where}: <name> {name!r} is not one of the classes {class_names}")
            x1, y1, x2, y2 = xmin - 1, ymin - 1, xmax, ymax  # 1-based inclusive -> 0-based edges
            if x2 <= x1 or y2 <= y1:
                raise UserError(f"{where} <bndbox>: empty box (xmin={xmin:g} xmax={xmax:g} "
                               f"ymin={ymin:g} ymax={ymax:g})")
            if x1 < -1 or y1 < -1 or x2 > w + 1 or y2 > h + 1:
                raise UserError(f"{where} <bndbox>: box ({xmin:g},{ymin:g},{xmax:g},{ymax:g}) outside the "
                               f"{w}x{h} image")
            x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
            boxes.append((index[name], *_yolo_box(x1, y1, x2, y2, w, h)))
        items.append(_Item(rel=img.relative_to(img_dir), src=img, boxes=boxes))
    return _write_dataset(items, out, class_names, val_fraction, seed, link)


# -- COCO --------------------------------------------------------------------------------------------
def _require(d: Any, key: str, where: str) -> Any:
    if not isinstance(d, dict) or key not in d:
        raise UserError(f"{where}: missing '{key}'")
    return d[key]


def import_coco(json_path: str | os.PathLike[str], images_dir: str | os.PathLike[str],
                out_dir: str | os.PathLike[str], val_fraction: float = 0.2, seed: int = 0,
                link: str = "symlink") -> Path:
    """Convert a COCO detection JSON (bbox = [x, y, w, h] pixels) into a YOLO dataset.

    Category ids are remapped to 0..nc-1 in id order; crowd annotations are skipped; images without
    annotations get an empty label file. Returns the data.yaml path.
    """
    jp, img_dir, out = Path(json_path), Path(images_dir), Path(out_dir)
    try:
        doc = json.loads(jp.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"{jp}: cannot read: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise UserError(f"{jp}:{exc.lineno}: invalid JSON: {exc.msg}") from exc
    if not img_dir.is_dir():
        raise UserError(f"{img_dir}: images folder not found")
    cats = _require(doc, "categories", str(jp))
    images = _require(doc, "images", str(jp))
    anns = _require(doc, "annotations", str(jp))
    if not isinstance(cats, list) or not cats:
        raise UserError(f"{jp}: 'categories' must be a non-empty list")
    cat_list = []
    for c in cats:
        cid = _require(c, "id", f"{jp}: category")
        cat_list.append((int(cid), str(_require(c, "name", f"{jp}: category id {cid}"))))
    cat_list.sort()
    if len({c for c, _ in cat_list}) != len(cat_list):
        raise UserError(f"{jp}: duplicate category ids")
    cat_index = {cid: i for i, (cid, _) in enumerate(cat_list)}
    names = [n for _, n in cat_list]

    by_id: dict[Any, tuple[Path, int, int]] = {}
    for im in images:
        iid = _require(im, "id", f"{jp}: image")
        where = f"{jp}: image id {iid}"
        fn = str(_require(im, "file_name", where))
        try:
            w, h = int(_require(im, "width", where)), int(_require(im, "height", where))
        except (TypeError, ValueError) as exc:
            raise UserError(f"{where}: width/height are not integers") from exc
        if w <= 0 or h <= 0:
            raise UserError(f"{where}: non-positive image size {w}x{h}")
        src = img_dir / fn
        if not src.is_file():
            raise UserError(f"{where}: image file {src} not found")
        by_id[iid] = (src, w, h)
    boxes: dict[Any, list[tuple[int, float, float, float, float]]] = {iid: [] for iid in by_id}
    for ann in anns:
        aid = _require(ann, "id", f"{jp}: annotation")
        where = f"{jp}: annotation id {aid}"
        iid = _require(ann, "image_id", where)
        if iid not in by_id:
            raise UserError(f"{where}: unknown image_id {iid}")
        cid = _require(ann, "category_id", where)
        if cid not in cat_index:
            raise UserError(f"{where}: unknown category_id {cid}")
        if ann.get("iscrowd", 0):
            continue
        bbox = _require(ann, "bbox", where)
        try:
            x, y, bw, bh = (float(v) for v in bbox)
        except (TypeError, ValueError) as exc:
            raise UserError(f"{where}: bbox must be 4 numbers [x, y, w, h], got {bbox!r}") from exc
        _, w, h = by_id[iid]
        if bw <= 0 or bh <= 0:
            raise UserError(f"{where}: bbox has non-positive size {bw:g}x{bh:g}")
        if x < -1 or y < -1 or x + bw > w + 1 or y + bh > h + 1:
            raise UserError(f"{where}: bbox {bbox} outside the {w}x{h} image")
        x1, y1, x2, y2 = max(x, 0.0), max(y, 0.0), min(x + bw, w), min(y + bh, h)
        boxes[iid].append((cat_index[cid], *_yolo_box(x1, y1, x2, y2, w, h)))
    items = [_Item(rel=Path(src.relative_to(img_dir)), src=src, boxes=boxes[iid])
             for iid, (src, _, _) in by_id.items()]
    return _write_dataset(items, out, names, val_fraction, seed, link)

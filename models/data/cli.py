"""``defect-inspect dataset import`` (VOC/COCO -> YOLO) and ``dataset check`` (label/duplicate report),
registered in the ``defect_inspect.dataset_commands`` entry-point group (see pyproject.toml)."""

from __future__ import annotations

import argparse
from pathlib import Path

from app.errors import UserError


def _cmd_import(args: argparse.Namespace) -> int:
    from models.data.importers import import_coco, import_voc

    names = [n.strip() for n in args.names.split(",") if n.strip()] if args.names else None
    if args.format == "voc":
        yaml_path = import_voc(args.annotations, args.images, args.out, names=names,
                               val_fraction=args.val_fraction, seed=args.seed, link=args.link)
    else:
        if names is not None:
            raise UserError("--names applies to --format voc only (COCO files carry their categories)")
        yaml_path = import_coco(args.annotations, args.images, args.out, val_fraction=args.val_fraction,
                                seed=args.seed, link=args.link)
    print(f"wrote {yaml_path}")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from models.data.formats import load_data_yaml
    from models.data.labels import check_dataset

    report = check_dataset(load_data_yaml(args.data), check_images=args.images)
    print(report.format())
    return 0 if report.ok else 2


def register_import(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="convert Pascal VOC XML or COCO JSON annotations into a YOLO dataset")
    p.add_argument("--format", choices=("voc", "coco"), required=True)
    p.add_argument("--annotations", type=Path, required=True,
                   help="VOC: folder of .xml files; COCO: the .json file")
    p.add_argument("--images", type=Path, required=True, help="folder holding the images")
    p.add_argument("--out", type=Path, required=True, help="output folder (data.yaml, images/, labels/)")
    p.add_argument("--names",
                   help="VOC: comma-separated class names in id order (default: sorted names found)")
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="share of images for val.txt (default 0.2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/val split")
    p.add_argument("--link", choices=("symlink", "copy", "hardlink"), default="symlink",
                   help="how images are placed under OUT/images (default symlink; copy where links fail)")
    p.set_defaults(func=_cmd_import)


def register_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="report counts per class, label errors (file:line), duplicates")
    p.add_argument("--data", type=Path, required=True, help="data.yaml")
    p.add_argument("--images", action="store_true", help="also decode every image (slower)")
    p.set_defaults(func=_cmd_check)

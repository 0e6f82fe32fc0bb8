"""models.data: data.yaml, label checks, importers, YoloDataset and the dataloader."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from conftest import NEU_DET, NEU_SAMPLE, needs_neu_det

from app.cli import main
from app.errors import UserError
from models.data.dataset import YoloDataset, create_dataloader
from models.data.formats import label_path_for, load_data_yaml
from models.data.importers import import_coco, import_voc
from models.data.labels import LabelError, all_boxes_wh, check_dataset, read_labels

HYP = yaml.safe_load((Path(__file__).resolve().parents[1] / "models" / "configs" / "hyp.yaml").read_text())


def _neu_images(names: list[str], root: Path = NEU_SAMPLE) -> list[Path]:
    """Images of the shipped NEU-DET sample (or of the full data set at ``root``)."""
    return [root / "images" / f"{n}.jpg" for n in names]


# -- labels -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("7 0.5 0.5 0.2 0.2", "class 7 out of range 0..5"),
        ("-1 0.5 0.5 0.2 0.2", "class -1 out of range 0..5"),
        ("1.5 0.5 0.5 0.2 0.2", "class '1.5' is not an integer"),
        ("1 0.5 0.5 0.2", "expected 5 fields (class cx cy w h), got 4"),
        ("1 0.5 0.5 0.2 0.2 0.9", "expected 5 fields (class cx cy w h), got 6"),
        ("1 0.5 abc 0.2 0.2", "non-numeric value 'abc'"),
        ("1 0.5 nan 0.2 0.2", "non-finite value 'nan'"),
        ("1 0.5 0.5 0 0.2", "zero or negative box size (w=0, h=0.2)"),
        ("1 0.5 0.5 0.2 -0.1", "zero or negative box size (w=0.2, h=-0.1)"),
        ("1 1.5 0.5 0.2 0.2", "coordinate cx=1.5 outside 0-1"),
        ("1 0.05 0.5 0.2 0.2", "box left edge -0.05 outside 0-1 (box cx=0.05 cy=0.5 w=0.2 h=0.2)"),
        ("1 0.5 0.95 0.2 0.2", "box bottom edge 1.05 outside 0-1 (box cx=0.5 cy=0.95 w=0.2 h=0.2)"),
    ],
)
def test_bad_label_line_names_file_and_line(tmp_path: Path, line: str, reason: str) -> None:
    f = tmp_path / "a.txt"
    f.write_text(f"0 0.5 0.5 0.1 0.1\n\n{line}\n")  # the bad line is line 3 (blank line 2 is fine)
    with pytest.raises(LabelError) as exc:
        read_labels(f, nc=6)
    assert str(exc.value) == f"{f}:3: {reason}"
    assert isinstance(exc.value, UserError)


def test_read_labels_ok_missing_and_edge_clip(tmp_path: Path) -> None:
    assert read_labels(tmp_path / "none.txt", 6).shape == (0, 5)
    f = tmp_path / "b.txt"
    f.write_text("2 0.5 0.5 0.2 0.4\n3 0.004 0.5 0.02 0.1\n")  # left edge -0.006: clipped to 0
    arr = read_labels(f, 6)
    assert arr.dtype == np.float32 and arr.shape == (2, 5)
    np.testing.assert_allclose(arr[0], [2, 0.5, 0.5, 0.2, 0.4], atol=1e-6)
    np.testing.assert_allclose(arr[1], [3, 0.007, 0.5, 0.014, 0.1], atol=1e-6)


def test_several_bad_lines_all_collected(tmp_path: Path) -> None:
    f = tmp_path / "c.txt"
    f.write_text("9 0.5 0.5 0.1 0.1\n0 0.5 0.5 0.1 0.1\nx\n")
    with pytest.raises(LabelError) as exc:
        read_labels(f, 6)
    assert exc.value.errors == [f"{f}:1: class 9 out of range 0..5",
                                f"{f}:3: expected 5 fields (class cx cy w h), got 1"]
    assert str(exc.value).startswith(f"{f}:1: class 9 out of range 0..5")


def test_label_path_convention() -> None:
    assert label_path_for("/d/images/train/images/a.jpg") == Path("/d/images/train/labels/a.txt")
    assert label_path_for("/d/images/x/b.PNG") == Path("/d/labels/x/b.txt")
    assert label_path_for("/d/pics/c.jpg") == Path("/d/pics/c.txt")


# -- data.yaml ----------------------------------------------------------------------------------------
def _make_yolo_tree(root: Path, n: int = 3) -> list[Path]:
    paths = []
    for split in ("train", "val"):
        for k in range(n):
            img = root / "images" / split / f"{split}{k}.png"
            img.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(img), np.full((40, 60, 3), 100, np.uint8))
            lab = label_path_for(img)
            lab.parent.mkdir(parents=True, exist_ok=True)
            lab.write_text(f"{k % 2} 0.5 0.5 0.25 0.5\n")
            paths.append(img)
    return paths


def test_data_yaml_with_folders_and_dict_names(tmp_path: Path) -> None:
    _make_yolo_tree(tmp_path / "ds")
    y = tmp_path / "cfg" / "data.yaml"
    y.parent.mkdir()
    y.write_text("path: ../ds\ntrain: images/train\nval: images/val\nnames: {0: scratch, 1: dent}\n")
    spec = load_data_yaml(y)
    assert spec.root == (tmp_path / "ds").resolve()
    assert spec.names == ["scratch", "dent"] and spec.nc == 2 and spec.test is None
    assert [p.name for p in spec.train] == ["train0.png", "train1.png", "train2.png"]
    assert len(spec.val) == 3 and spec.yaml_path == y.resolve()


def test_data_yaml_with_lists(tmp_path: Path) -> None:
    _make_yolo_tree(tmp_path)
    (tmp_path / "train.txt").write_text("images/train/train0.png\n# comment\n\nimages/train/train2.png\n")
    (tmp_path / "val.txt").write_text(f"{tmp_path}/images/val/val1.png\n")
    y = tmp_path / "data.yaml"
    y.write_text("train: train.txt\nval: val.txt\ntest: images/val\nnc: 2\nnames: [a, b]\n")
    spec = load_data_yaml(y)
    assert spec.train == [tmp_path / "images/train/train0.png", tmp_path / "images/train/train2.png"]
    assert spec.val == [tmp_path / "images/val/val1.png"]
    assert spec.test is not None and len(spec.test) == 3


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("train: images/train\nval: images/val\nnc: 3\nnames: [a, b]\n",
         "key 'nc': nc=3 but 'names' lists 2"),
        ("train: images/train\nnames: [a, b]\n", "key 'val' is missing"),
        ("train: images/train\nval: images/val\n", "key 'names' is missing"),
        ("train: nowhere\nval: images/val\nnames: [a]\n", "key 'train':"),
        ("train: images/train\nval: images/val\nnames: {0: a, 2: b}\n", "key 'names': class ids must be"),
        ("train: [images/train\n", "invalid YAML"),
    ],
)
def test_data_yaml_errors_name_file_and_key(tmp_path: Path, text: str, fragment: str) -> None:
    _make_yolo_tree(tmp_path)
    y = tmp_path / "data.yaml"
    y.write_text(text)
    with pytest.raises(UserError) as exc:
        load_data_yaml(y)
    assert str(exc.value).startswith(str(y)) and fragment in str(exc.value)


def test_list_entry_missing_image_names_line(tmp_path: Path) -> None:
    _make_yolo_tree(tmp_path)
    (tmp_path / "train.txt").write_text("images/train/train0.png\nimages/train/gone.png\n")
    y = tmp_path / "data.yaml"
    y.write_text("train: train.txt\nval: images/val\nnames: [a, b]\n")
    with pytest.raises(UserError, match=r"train\.txt:2: image not found"):
        load_data_yaml(y)


# -- check_dataset ----------------------------------------------------------------------------------
@needs_neu_det  # the one duplicate pair of the data set
def test_check_dataset_finds_neu_duplicates(tmp_path: Path) -> None:
    names = ["patches_101", "patches_105", "crazing_1", "inclusion_10"]
    (tmp_path / "t.txt").write_text("".join(f"images/{n}.jpg\n" for n in names[:3]))
    (tmp_path / "v.txt").write_text(f"images/{names[3]}.jpg\n")
    y = tmp_path / "data.yaml"
    y.write_text(f"path: {NEU_DET}\ntrain: {tmp_path}/t.txt\nval: {tmp_path}/v.txt\n"
                 "names: [crazing, inclusion, patches, pitted_surface, rolled-in_scale, scratches]\n")
    report = check_dataset(load_data_yaml(y))
    assert report.duplicate_images == [[NEU_DET / "images/patches_101.jpg",
                                         NEU_DET / "images/patches_105.jpg"]]
    assert report.ok and not report.label_errors and not report.unlabelled
    assert report.splits["train"].images == 3 and report.splits["val"].images == 1
    assert report.splits["train"].boxes == sum(len(read_labels(label_path_for(p), 6))
                                               for p in _neu_images(names[:3], NEU_DET))
    assert report.splits["train"].per_class[2] == 6  # patches_101 and _105 hold 3 patches each
    assert "patches_101.jpg = " in report.format()


def test_check_dataset_collects_errors_and_cli_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    imgs = _make_yolo_tree(tmp_path)
    label_path_for(imgs[0]).write_text("0 0.5 0.5 0.25 0.5\n0 0.5 0.5 0.25 0.5\n")  # duplicate box
    label_path_for(imgs[1]).write_text("")  # unlabelled
    bad = label_path_for(imgs[3])
    bad.write_text("0 0.5 0.5 0.25 0.5\n5 0.5 0.5 0.25 0.5\n")
    y = tmp_path / "data.yaml"
    y.write_text("train: images/train\nval: images/val\nnames: [a, b]\n")
    report = check_dataset(load_data_yaml(y))
    assert report.label_errors == [f"{bad}:2: class 5 out of range 0..1"]
    assert report.duplicate_boxes == [f"{label_path_for(imgs[0])}:2: same box as line 1"]
    assert report.unlabelled == [imgs[1]]
    assert report.splits["train"].per_class == [3, 0] and report.splits["val"].per_class == [2, 1]
    assert not report.ok
    assert main(["dataset", "check", "--data", str(y)]) == 2
    out = capsys.readouterr().out
    assert f"{bad}:2: class 5 out of range 0..1" in out and "FAILED" in out
    bad.write_text("1 0.5 0.5 0.25 0.5\n")
    assert main(["dataset", "check", "--data", str(y)]) == 0


def test_all_boxes_wh_scales_long_side(tmp_path: Path) -> None:
    imgs = _make_yolo_tree(tmp_path, n=1)  # 60x40 images, boxes 0.25 x 0.5
    wh = all_boxes_wh(imgs, imgsz=120)
    np.testing.assert_allclose(wh, [[30, 40], [30, 40]], atol=1e-4)


# -- importers --------------------------------------------------------------------------------------
@needs_neu_det  # the data set's Pascal VOC annotations
def test_voc_import_matches_shipped_yolo_labels(tmp_path: Path) -> None:
    names = ["crazing_63", "crazing_1", "patches_101", "scratches_10", "inclusion_10", "rolled-in_scale_100"]
    ann = tmp_path / "ann"
    ann.mkdir()
    for n in names:
        shutil.copy(NEU_DET / "annotations" / f"{n}.xml", ann)
    classes = ["crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"]
    y = import_voc(ann, NEU_DET / "images", tmp_path / "out", names=classes, val_fraction=0.34)
    spec = load_data_yaml(y)
    assert spec.names == classes and len(spec.val) == 2 and len(spec.train) == 4
    for img in spec.train + spec.val:
        ours = read_labels(label_path_for(img), 6)
        shipped = read_labels(NEU_DET / "labels" / f"{img.stem}.txt", 6)
        assert ours.shape == shipped.shape and len(ours) > 0
        np.testing.assert_allclose(ours, shipped, atol=1e-3)
        assert img.is_symlink() and img.resolve() == (NEU_DET / "images" / img.name).resolve()


@needs_neu_det  # the data set's Pascal VOC annotations
def test_voc_import_errors_name_file_and_element(tmp_path: Path) -> None:
    ann = tmp_path / "ann"
    ann.mkdir()
    xml_text = (NEU_DET / "annotations" / "crazing_63.xml").read_text()
    text = xml_text.replace("<xmax>171</xmax>", "<xmax>x</xmax>")
    (ann / "crazing_63.xml").write_text(text)
    with pytest.raises(UserError) as exc:
        import_voc(ann, NEU_DET / "images", tmp_path / "out")
    xml = ann / "crazing_63.xml"
    assert str(exc.value) == f"{xml}: <object> #2 (crazing) <bndbox>: <xmax> is not a number: 'x'"
    (ann / "crazing_63.xml").write_text(xml_text)
    with pytest.raises(UserError, match=r"<object> #1 \(crazing\): <name> 'crazing' is not one of"):
        import_voc(ann, NEU_DET / "images", tmp_path / "out", names=["dent"])


def _coco_fixture(tmp_path: Path) -> tuple[Path, Path]:
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    cv2.imwrite(str(imgs / "a.png"), np.zeros((50, 100, 3), np.uint8))
    cv2.imwrite(str(imgs / "b.png"), np.zeros((80, 80, 3), np.uint8))
    cv2.imwrite(str(imgs / "c.png"), np.zeros((10, 10, 3), np.uint8))
    doc = {
        "images": [{"id": 1, "file_name": "a.png", "width": 100, "height": 50},
                   {"id": 2, "file_name": "b.png", "width": 80, "height": 80},
                   {"id": 3, "file_name": "c.png", "width": 10, "height": 10}],
        "categories": [{"id": 7, "name": "dent"}, {"id": 3, "name": "scratch"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 7, "bbox": [10, 5, 20, 10], "iscrowd": 0},
            {"id": 11, "image_id": 1, "category_id": 3, "bbox": [50, 0, 50, 50]},
            {"id": 12, "image_id": 2, "category_id": 3, "bbox": [0, 40, 40, 40]},
            {"id": 13, "image_id": 2, "category_id": 7, "bbox": [1, 1, 5, 5], "iscrowd": 1},
        ],
    }
    jp = tmp_path / "ann.json"
    jp.write_text(json.dumps(doc))
    return jp, imgs


def test_coco_import(tmp_path: Path) -> None:
    jp, imgs = _coco_fixture(tmp_path)
    y = import_coco(jp, imgs, tmp_path / "out", val_fraction=0.0, link="copy")
    spec = load_data_yaml(y)
    assert spec.names == ["scratch", "dent"]  # sorted by category id: 3, 7
    by_name = {p.name: read_labels(label_path_for(p), 2) for p in spec.train}
    assert set(by_name) == {"a.png", "b.png", "c.png"}
    np.testing.assert_allclose(by_name["a.png"], [[1, 0.2, 0.2, 0.2, 0.2], [0, 0.75, 0.5, 0.5, 1.0]],
                               atol=1e-6)
    np.testing.assert_allclose(by_name["b.png"], [[0, 0.25, 0.75, 0.5, 0.5]], atol=1e-6)  # crowd skipped
    assert by_name["c.png"].shape == (0, 5)
    assert not (tmp_path / "out/images/a.png").is_symlink()


def test_coco_import_errors_name_annotation(tmp_path: Path) -> None:
    jp, imgs = _coco_fixture(tmp_path)
    doc = json.loads(jp.read_text())
    doc["annotations"][2]["category_id"] = 99
    jp.write_text(json.dumps(doc))
    with pytest.raises(UserError) as exc:
        import_coco(jp, imgs, tmp_path / "out")
    assert str(exc.value) == f"{jp}: annotation id 12: unknown category_id 99"
    doc["annotations"][2]["category_id"] = 3
    doc["annotations"][0]["bbox"] = [90, 5, 20, 10]
    jp.write_text(json.dumps(doc))
    with pytest.raises(UserError, match=r"annotation id 10: bbox \[90, 5, 20, 10\] outside the 100x50 image"):
        import_coco(jp, imgs, tmp_path / "out")


@needs_neu_det  # the data set's Pascal VOC annotations
def test_cli_import_voc(tmp_path: Path) -> None:
    ann = tmp_path / "ann"
    ann.mkdir()
    for n in ("crazing_1", "scratches_10"):
        shutil.copy(NEU_DET / "annotations" / f"{n}.xml", ann)
    rc = main(["dataset", "import", "--format", "voc", "--annotations", str(ann), "--images",
               str(NEU_DET / "images"), "--out", str(tmp_path / "o"), "--names", "crazing,scratches",
               "--val-fraction", "0.5"])
    assert rc == 0
    spec = load_data_yaml(tmp_path / "o" / "data.yaml")
    assert spec.names == ["crazing", "scratches"] and len(spec.train) == 1 and len(spec.val) == 1


# -- dataset and loader -------------------------------------------------------------------------------
NEU8 = ["crazing_103", "crazing_109", "inclusion_103", "patches_103", "pitted_surface_103",  # shipped sample
        "rolled-in_scale_103", "scratches_103", "scratches_109"]


@pytest.mark.parametrize("augment", [False, True])
def test_dataset_shapes_and_labels(augment: bool) -> None:
    ds = YoloDataset(_neu_images(NEU8), nc=6, imgsz=256, hyp=HYP, augment=augment, cache=augment)
    assert len(ds) == 8 and all(lab.shape[1] == 5 for lab in ds.labels)
    ds.seed(1)
    for i in range(len(ds)):
        img, labels, path, (orig_hw, ratio, pad) = ds[i]
        assert img.shape == (3, 256, 256) and img.dtype == torch.uint8 and img.is_contiguous()
        assert labels.dtype == torch.float32 and labels.shape[1] == 6
        assert (labels[:, 0] == 0).all()
        assert ((labels[:, 1] >= 0) & (labels[:, 1] < 6)).all()
        assert ((labels[:, 2:] >= 0) & (labels[:, 2:] <= 1)).all() and (labels[:, 4:] > 0).all()
        assert Path(path) == ds.image_paths[i]
        assert orig_hw == (200, 200) and ratio == (1.28, 1.28) and pad == (0, 0)
        if not augment:  # square images: the letterboxed labels are the file's labels
            np.testing.assert_allclose(labels[:, 1:].numpy(), ds.labels[i], atol=1e-5)
            rgb = cv2.cvtColor(cv2.resize(cv2.imread(path), (256, 256)), cv2.COLOR_BGR2RGB)
            np.testing.assert_array_equal(img.permute(1, 2, 0).numpy(), rgb)


def test_dataset_rejects_bad_labels(tmp_path: Path) -> None:
    img = tmp_path / "images" / "x.jpg"
    img.parent.mkdir()
    shutil.copy(NEU_SAMPLE / "images" / "crazing_103.jpg", img)
    lab = label_path_for(img)
    lab.parent.mkdir()
    lab.write_text("0 0.5 0.5 0.2 0.2\n6 0.5 0.5 0.2 0.2\n")
    with pytest.raises(LabelError, match=rf"^{lab}:2: class 6 out of range 0..5$"):
        YoloDataset([img], nc=6, imgsz=256, hyp=HYP, augment=True)


def test_collate_and_reproducible_loader() -> None:
    def first_batch() -> tuple[torch.Tensor, torch.Tensor]:
        loader, ds = create_dataloader(_neu_images(NEU8), 6, 128, batch_size=4, hyp=HYP, augment=True,
                                       workers=0, shuffle=True, seed=3)
        imgs, labels, paths, shapes = next(iter(loader))
        assert imgs.shape == (4, 3, 128, 128) and imgs.dtype == torch.uint8 and len(paths) == len(shapes) == 4
        return imgs, labels

    (i1, l1), (i2, l2) = first_batch(), first_batch()
    assert torch.equal(i1, i2) and torch.equal(l1, l2)
    assert set(l1[:, 0].long().tolist()) <= {0, 1, 2, 3} and (l1[:, 0].diff() >= 0).all()

    ds = YoloDataset(_neu_images(NEU8[:3]), nc=6, imgsz=128, hyp=HYP, augment=False)
    imgs, labels, _, _ = YoloDataset.collate_fn([ds[0], ds[1], ds[2]])
    counts = [len(ds.labels[k]) for k in range(3)]
    assert labels[:, 0].long().tolist() == [k for k in range(3) for _ in range(counts[k])]


def test_an_epochs_batches_depend_on_seed_and_epoch_alone() -> None:
    """Epoch 1 holds the same augmented batches whether epoch 0 ran before it (a resumed run starts at
    its epoch) and whatever the number of loader workers; another epoch or seed draws others."""

    def epoch_batches(loader, epoch: int) -> list[torch.Tensor]:
        loader.sampler.set_epoch(epoch)
        return [imgs for imgs, _labels, _paths, _shapes in loader]

    def loader(workers: int, seed: int = 3):
        return create_dataloader(_neu_images(NEU8), 6, 128, batch_size=4, hyp=HYP, augment=True,
                                 workers=workers, shuffle=True, seed=seed)[0]

    continuing = loader(0)
    epoch0 = epoch_batches(continuing, 0)
    epoch1 = epoch_batches(continuing, 1)
    for fresh in (loader(0), loader(2)):
        again = epoch_batches(fresh, 1)
        assert all(torch.equal(x, y) for x, y in zip(epoch1, again, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(epoch0, epoch1, strict=True))
    other_seed = epoch_batches(loader(0, seed=4), 1)
    assert not all(torch.equal(x, y) for x, y in zip(epoch1, other_seed, strict=True))


def test_close_mosaic_and_two_worker_loader() -> None:
    loader, ds = create_dataloader(_neu_images(NEU8), 6, 128, batch_size=3, hyp=HYP, augment=True,
                                   workers=2, shuffle=True, seed=0)
    assert loader.num_workers == 2 and loader.persistent_workers
    seen = 0
    for _ in range(2):  # two epochs over the persistent workers
        for imgs, labels, _paths, _shapes in loader:
            assert imgs.shape[1:] == (3, 128, 128) and labels.shape[1] == 6
            seen += imgs.shape[0]
    assert seen == 16
    assert ds.mosaic_enabled and ds.cutmix_enabled
    ds.close_mosaic()
    assert not ds.mosaic_enabled and not ds.cutmix_enabled

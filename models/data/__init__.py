"""Dataset layer for the detector: data.yaml parsing, YOLO label checks, VOC/COCO importers,
augmentations (numpy/OpenCV) and the torch ``YoloDataset``.

Modules that do not need torch (``formats``, ``labels``, ``importers``, ``augment``) never import it,
so ``defect-inspect dataset ...`` works without the training extra except for ``dataset``.
"""

"""Dataset layer for the detector: data.yaml parsing, YOLO label checks, VOC/COCO importers,
augmentations (numpy/OpenCV) and the torch ``YoloDataset``.

Only ``dataset`` imports torch; ``formats``, ``labels``, ``importers``, ``augment`` and ``cli`` need just
numpy, OpenCV and PyYAML, so ``defect-inspect dataset import|check`` runs without the training extra.
"""

"""The detector: YOLOv5s v7.0 with CBAM, YOLOv5 loss with Focal Loss, K-means anchors,
training, COCO evaluation, ONNX export and INT8 quantization. The only package that imports torch."""

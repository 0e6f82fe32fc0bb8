"""Defect-inspection service: ONNX Runtime inference, camera ingest, SQL defect log, MES API."""

__version__ = "0.1.0"

"""Camera ingest: sources (OpenCV, folders, the line simulator), per-camera bounded queues, inference
workers that micro-batch across cameras, and a batched database writer with an on-disk journal."""

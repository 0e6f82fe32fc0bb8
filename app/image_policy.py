"""Which frames are stored on disk: the one image policy (always | ng | never), for the service's
uploads (INSPECT_IMAGE_POLICY) and for each camera of the cameras file (``images``)."""

from __future__ import annotations

from typing import Literal

from app.vocabulary import NG

ImagePolicy = Literal["always", "ng", "never"]


def should_store(policy: ImagePolicy, verdict: str) -> bool:
    if policy == "always":
        return True
    if policy == "ng":
        return verdict == NG
    if policy == "never":
        return False
    raise ValueError(f"unknown image policy {policy!r}")

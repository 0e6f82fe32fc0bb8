"""Why a camera is down: the failure classes shown in GET /api/v1/cameras, the log and the
``inspect_camera_failures_total{kind}`` metric, and how a decoder's own words map onto them."""

from __future__ import annotations

import re
from enum import StrEnum


class FailureKind(StrEnum):
    REFUSED = "refused"  # nothing listens at the address
    TIMEOUT = "timeout"  # no answer, or no first frame within the open timeout
    AUTH = "auth"  # the camera wants (other) credentials
    NOT_FOUND = "not_found"  # the server answers, the stream path does not exist
    NOT_VIDEO = "not_video"  # the answer is not a video stream
    NO_DEVICE = "no_device"  # the local capture device does not exist
    DECODER_CRASHED = "decoder_crashed"  # the decoder process died from a signal nobody sent it
    STALLED = "stalled"  # connected, but no frame for stall_timeout_s (the watchdog restarted it)
    ENDED = "ended"  # the stream ended (the server closed it)
    ERROR = "error"  # anything else; the message says what


# First match wins; each pattern is a phrase FFmpeg (or the OS through it) prints for that class.
_DECODER_PHRASES: tuple[tuple[FailureKind, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(pattern, re.IGNORECASE)) for kind, pattern in (
        (FailureKind.REFUSED, r"connection refused"),
        (FailureKind.AUTH, r"\b401\b|\b403\b|unauthori[sz]ed|forbidden|authori[sz]ation failed"),
        (FailureKind.NOT_FOUND, r"\b404\b|not found|\b454\b|session not found"),
        (FailureKind.NO_DEVICE, r"/dev/video\S*: no such file|no such device"),
        (FailureKind.TIMEOUT, r"timed out|timeout|no route to host|network is unreachable|"
                              r"host is unreachable"),
        (FailureKind.NOT_VIDEO, r"invalid data found|matches no streams|does not contain any stream|"
                                r"could not find codec parameters|no video stream|unknown input format"),
    ))


def classify_decoder_output(lines: list[str]) -> FailureKind | None:
    """The failure class named by a decoder's error output, or None when it names none."""
    text = "\n".join(lines)
    for kind, pattern in _DECODER_PHRASES:
        if pattern.search(text):
            return kind
    return None

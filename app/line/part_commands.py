"""The line's word on the part under a camera, over MQTT: each camera of the process listens on
``<prefix>/<line>/<station>/<camera>/part/set`` (app.line.topics). The payload is the part id as
UTF-8 text, or a JSON object ``{"part_id": "..."}``; an empty payload (also what clears a retained
command) or ``{"part_id": null}`` ends the part. A message that is none of these, or a part id the
API would refuse (1 to 128 characters, no control characters), is logged and counted
(``inspect_part_commands_total{via="mqtt",outcome="refused"}``) and changes nothing."""

from __future__ import annotations

import json
import logging

from app import metrics as m
from app.errors import InvalidInput, UserError
from app.ingest.parts import CameraPlace, PartBoard
from app.line.topics import camera_topic

log = logging.getLogger(__name__)

KIND = "part/set"
VIA = "mqtt"


def part_topics(prefix: str, places: list[CameraPlace]) -> dict[str, str]:
    """Each camera's command topic -> the camera id."""
    return {camera_topic(prefix, p.line, p.station, p.camera_id, KIND): p.camera_id for p in places}


def part_of_message(payload: bytes) -> str | None:
    """The part id a message says (None: the part ended); InvalidInput for a malformed message (the
    id itself is checked where it is set)."""
    if not payload:
        return None
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("the payload is not UTF-8 text") from None
    if not text.lstrip().startswith("{"):
        return text
    try:
        body = json.loads(text)
    except ValueError:
        raise InvalidInput("the payload starts like a JSON object but is not one") from None
    if not isinstance(body, dict) or "part_id" not in body:
        raise InvalidInput('a JSON payload is an object with "part_id"')
    part_id = body["part_id"]
    if part_id is not None and not isinstance(part_id, str):
        raise InvalidInput('"part_id" is a string, or null to end the part')
    return part_id


def apply_part_message(board: PartBoard, camera_id: str, topic: str, payload: bytes) -> None:
    """Set (or end) the camera's part as the message says; never raises (the MQTT client's thread)."""
    try:
        part_id = part_of_message(payload)
    except InvalidInput as exc:
        m.PART_COMMANDS_TOTAL.labels(via=VIA, outcome="refused").inc()
        log.warning("MQTT: %s: message refused: %s", topic, exc)
        return
    try:
        board.set(camera_id, part_id, by=VIA, via=VIA)
    except UserError as exc:  # counted by the board
        log.warning("MQTT: %s: message refused: %s", topic, exc)
    except Exception:
        log.exception("MQTT: %s: the part was not set", topic)

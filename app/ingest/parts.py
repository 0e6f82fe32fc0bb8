"""The part (a coil, a sheet, a batch) under each camera, as the line says: set, and ended, through
the REST API, an MQTT command or an OPC UA method (all through :class:`PartBoard`). Every frame a
camera captures while a part is current carries its id; a camera with tracking also notes where on
the material the part began, so the part's tracked defects are placed from its start.

The line's word is applied on the capture thread, at the next captured frame: that frame is the
part's first, and the material's measured offset there (app.ingest.motion) is the part's origin.
Saying the current part again changes nothing (a retained MQTT command delivered again after a
reconnection does not move the origin)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime

from pydantic import TypeAdapter, ValidationError

from app import metrics as m
from app.errors import InvalidInput, NotFound
from app.ingest.motion import MotionSample
from app.schemas.common import LongName
from app.vocabulary import utcnow

log = logging.getLogger(__name__)
PART_ID = TypeAdapter(LongName)  # the rule of every part id the service takes (posted frames too)
Heading = tuple[int, int]  # the axis the material moves along (0: x, 1: y) and its sign (+1, -1)


@dataclass(frozen=True)
class PartView:
    """A camera's current part as the line said it: which, since when (the service's clock) and who
    said so (``api:<key name>``, ``mqtt``, ``opcua:<user>``)."""

    part_id: str
    since: datetime
    set_by: str

    def to_dict(self) -> dict:
        return {"part_id": self.part_id, "since": self.since, "set_by": self.set_by}


@dataclass(frozen=True)
class PartStamp:
    """What a frame of a part carries: the part, and for a camera with tracking the material's offset
    at the part's first frame (``origin``, frame pixels) and that frame's size (width, height)."""

    part: PartView
    origin: tuple[float, float] | None = None
    frame_size: tuple[int, int] | None = None

    @property
    def part_id(self) -> str:
        return self.part.part_id

    def place(self, position: tuple[float, float], heading: Heading | None) -> tuple[float, float]:
        """A position on the material (frame pixels of the stream's first frame, as tracks keep it) as
        a place on the part: along the motion, the distance behind the part's start (the material
        that entered the view at the part's first frame), 0 and up; across it, the pixel column (or
        row) of the part's first frame. Without a known heading (the line has not moved yet): frame
        pixels of the part's first frame; without an origin (no tracking): unchanged."""
        if self.origin is None:
            return position
        shifted = [position[0] + self.origin[0], position[1] + self.origin[1]]
        if heading is None or self.frame_size is None:
            return shifted[0], shifted[1]
        axis, sign = heading
        # material moving towards + enters at 0 and lies at ever lower pixels; towards - it enters at
        # the far edge (the frame's extent) and lies beyond it
        shifted[axis] = -shifted[axis] if sign > 0 else shifted[axis] - self.frame_size[axis]
        return shifted[0], shifted[1]


class CurrentPart:
    """One camera's part: ``set`` from any thread (the API, the MQTT client, the OPC UA server),
    ``stamp`` on the capture thread for every captured frame, ``view`` for the camera's state."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._said: PartView | None = None  # the line's latest word
        self._stamp: PartStamp | None = None  # what the frames carry (from the first frame after it)

    def set(self, part_id: str | None, by: str) -> tuple[PartView | None, bool]:
        """The part now under the camera (None: the part ended); returns the current part and whether
        this changed it (the same part again does not)."""
        with self._lock:
            current = self._said
            if (current.part_id if current is not None else None) == part_id:
                return current, False
            self._said = None if part_id is None else PartView(part_id, utcnow(), by)
            return self._said, True

    def view(self) -> PartView | None:
        with self._lock:
            return self._said

    def stamp(self, motion: MotionSample | None, frame_size: tuple[int, int]) -> PartStamp | None:
        """Capture thread, every captured frame after its motion is measured (``frame_size``: width,
        height): the part the frame belongs to; a new part starts at this frame, its origin is this
        frame's offset."""
        with self._lock:
            said = self._said
        if said is None:
            self._stamp = None
        elif self._stamp is None or self._stamp.part is not said:
            self._stamp = PartStamp(said, None if motion is None else (motion.offset_x, motion.offset_y),
                                    None if motion is None else frame_size)
        return self._stamp


def check_part_id(value: object) -> str:
    """``value`` as a part id (1 to 128 characters, no control characters), or InvalidInput."""
    try:
        return PART_ID.validate_python(value)
    except ValidationError as exc:
        raise InvalidInput(f"part_id: {exc.errors()[0]['msg']}") from None


@dataclass(frozen=True)
class CameraPlace:
    """A camera of the pipeline and where it sits (its command topic, its OPC UA object)."""

    camera_id: str
    line: str | None
    station: str | None


class PartBoard:
    """The current part of every camera of a pipeline: the one way the API, MQTT and OPC UA set it."""

    def __init__(self, cameras: list[tuple[CameraPlace, CurrentPart]]) -> None:
        self._cameras = {place.camera_id: (place, part) for place, part in cameras}

    def places(self) -> list[CameraPlace]:
        return [place for place, _ in self._cameras.values()]

    def set(self, camera_id: str, part_id: str | None, by: str, via: str) -> PartView | None:
        """The part now under ``camera_id`` (None: its part ended), said through ``via`` (api, mqtt,
        opcua) by ``by``; the camera's current part. NotFound: no such camera in this process;
        InvalidInput: not a part id. Both are counted (``inspect_part_commands_total``)."""
        try:
            found = self._cameras.get(camera_id)
            if found is None:
                raise NotFound(f"camera {camera_id!r} does not run in this process")
            part = found[1]
            view, changed = part.set(None if part_id is None else check_part_id(part_id), by)
        except (NotFound, InvalidInput):
            m.PART_COMMANDS_TOTAL.labels(via=via, outcome="refused").inc()
            raise
        outcome = "unchanged" if not changed else "set" if view is not None else "ended"
        m.PART_COMMANDS_TOTAL.labels(via=via, outcome=outcome).inc()
        if changed:
            log.info("camera %s: %s (%s)", camera_id,
                     f"part {view.part_id!r} starts" if view is not None else "part ended", by)
        return view

"""The OPC UA server: per camera the last result, counters, the camera's state and the model version,
updated as inspections are stored so clients can subscribe; each new result also fires a
``ResultReadyEventType`` event. The layout follows OPC 40100 (Machine Vision) where it fits: a
``ResultManagement`` object per camera holding the last result with the specification's result
properties (ResultId, PartId, CreationTime, ResultState, InternalRecipeId) and this service's
content (Verdict, DefectCount, DefectClasses, the result as JSON). Node ids are strings in the
namespace INSPECT_OPCUA_NAMESPACE; docs/integration.md lists them.

asyncua is asynchronous: the server runs its own event loop in a thread of its own; the stored
inspections come through :class:`InspectionFeed` (off the inspection path) and are applied there."""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from asyncua import Node, Server, ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.user_managers import UserManager
from sqlalchemy.orm import Session

from app.line.feed import InspectionFeed
from app.schemas import CameraCounters, InspectionPublic
from app.settings import Settings
from app.vocabulary import NG

log = logging.getLogger(__name__)
T = TypeVar("T")

ROOT = "DefectInspection"
RESULT_COMPLETED = 1  # OPC 40100 ResultStateDataType: processing was carried out correctly
SECURITY = {
    "none": ua.SecurityPolicyType.NoSecurity,
    "sign": ua.SecurityPolicyType.Basic256Sha256_Sign,
    "sign_and_encrypt": ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
}
CALL_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class OpcuaConfig:
    endpoint: str
    namespace: str = "urn:defect-inspect"
    security: tuple[str, ...] = ("none",)
    cert_file: Path | None = None
    key_file: Path | None = None
    username: str | None = None
    password: str | None = None
    queue_size: int = 10_000

    @classmethod
    def from_settings(cls, s: Settings) -> OpcuaConfig | None:
        """None while INSPECT_OPCUA_ENDPOINT is unset (no server)."""
        if not s.opcua_endpoint:
            return None
        return cls(endpoint=s.opcua_endpoint, namespace=s.opcua_namespace, security=tuple(s.opcua_security),
                   cert_file=s.opcua_cert_file, key_file=s.opcua_key_file, username=s.opcua_username,
                   password=s.opcua_password.get_secret_value() if s.opcua_password else None)


class OneUserManager(UserManager):
    """Only the configured user may open a session."""

    def __init__(self, username: str, password: str) -> None:
        self.username, self.password = username, password

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:
        given = (password or "").encode()
        if username == self.username and hmac.compare_digest(given, self.password.encode()):
            return User(role=UserRole.User, name=username)
        return None


def node_id(camera: str, *path: str) -> str:
    """The string node id of a camera's node: ``DefectInspection/Cameras/<camera>[/<path>...]`` (a
    camera id holds no ``/``)."""
    return "/".join((ROOT, "Cameras", camera, *path))


@dataclass
class CameraNodes:
    """The variable nodes of one camera and its counters."""

    obj: Node
    values: dict[str, Node] = field(default_factory=dict)
    inspected: int = 0
    ng: int = 0


# name: (variant type, initial value); on the camera object
CAMERA_VARIABLES: dict[str, tuple[ua.VariantType, Any]] = {
    "Line": (ua.VariantType.String, ""),
    "Station": (ua.VariantType.String, ""),
    "CameraUp": (ua.VariantType.Boolean, False),
    "ModelVersion": (ua.VariantType.String, ""),
    "Inspected": (ua.VariantType.UInt64, 0),
    "NG": (ua.VariantType.UInt64, 0),
    "Yield": (ua.VariantType.Double, 0.0),
}
# on <camera>.ResultManagement.LastResult
RESULT_VARIABLES: dict[str, tuple[ua.VariantType, Any]] = {
    "ResultId": (ua.VariantType.String, ""),
    "PartId": (ua.VariantType.String, ""),
    "CreationTime": (ua.VariantType.DateTime, None),
    "ResultState": (ua.VariantType.Int32, 0),
    "InternalRecipeId": (ua.VariantType.String, ""),
    "Verdict": (ua.VariantType.String, ""),
    "DefectCount": (ua.VariantType.Int32, 0),
    "DefectClasses": (ua.VariantType.String, []),
    "ResultContent": (ua.VariantType.String, ""),
}
EVENT_PROPERTIES = [("ResultId", ua.VariantType.String), ("PartId", ua.VariantType.String),
                    ("ResultState", ua.VariantType.Int32), ("CameraId", ua.VariantType.String),
                    ("Verdict", ua.VariantType.String)]


class OpcuaServer(InspectionFeed):
    """``start()`` binds the endpoint (raises when it cannot), ``stop()`` ends it."""

    thread_name = "opcua-feed"

    def __init__(self, config: OpcuaConfig, session_factory: Callable[[], Session] | None,
                 cameras: Callable[[], list[dict[str, Any]]] | None = None, poll_s: float = 0.5) -> None:
        super().__init__(session_factory, config.queue_size, cameras, poll_s)
        self.config = config
        self.dropped = 0
        self.updated = 0
        self.ns = 0
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._loop.run_forever, name="opcua-server", daemon=True)
        self._server: Server | None = None
        self._cameras_folder: Node | None = None
        self._events: Any = None
        self._event_type: Node | None = None
        self._nodes: dict[str, CameraNodes] = {}

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> OpcuaServer:
        self._loop_thread.start()
        try:
            self._call(self._start_server())
        except BaseException:
            self._end_loop()
            raise
        self.start_feed()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self.stop_feed(timeout)
        if self._server is not None:
            try:
                self._call(self._server.stop())
            except Exception:
                log.exception("OPC UA server did not stop cleanly")
        self._end_loop()

    def _end_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._loop_thread.join(5)

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the server's loop and wait for it (from the feed's or the caller's thread)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(CALL_TIMEOUT_S)

    # -- the feed's deliveries (feed thread) -------------------------------------------------------
    def deliver_inspections(self, inspections: list[InspectionPublic]) -> None:
        self._call(self._apply_results(inspections))

    def deliver_camera(self, camera: CameraCounters) -> None:
        self._call(self._apply_camera(camera))

    def count_drops(self, n: int) -> None:
        self.dropped += n
        log.warning("OPC UA: %d result(s) not shown (queue full)", n)

    # -- the server (its loop) --------------------------------------------------------------------
    async def _start_server(self) -> None:
        c = self.config
        users = OneUserManager(c.username, c.password or "") if c.username else None
        server = Server(user_manager=users)
        await server.init()
        server.set_endpoint(c.endpoint)
        server.set_server_name("Defect inspection")
        server.set_security_policy([SECURITY[mode] for mode in c.security])
        server.set_identity_tokens([ua.UserNameIdentityToken] if c.username else [ua.AnonymousIdentityToken])
        if c.cert_file is not None and c.key_file is not None:
            await server.load_certificate(str(c.cert_file))
            await server.load_private_key(str(c.key_file))
        self.ns = await server.register_namespace(c.namespace)
        objects = server.nodes.objects
        root = await objects.add_object(ua.NodeId(ROOT, self.ns), ua.QualifiedName(ROOT, self.ns))
        self._cameras_folder = await root.add_folder(ua.NodeId(f"{ROOT}/Cameras", self.ns),
                                                     ua.QualifiedName("Cameras", self.ns))
        self._event_type = await self._result_ready_type(server)
        self._events = await server.get_event_generator(self._event_type, root)
        await server.start()
        self._server = server
        log.info("OPC UA server listening on %s (namespace %s = ns=%d)", c.endpoint, c.namespace, self.ns)

    async def _result_ready_type(self, server: Server) -> Node:
        """``ResultReadyEventType`` (a subtype of BaseEventType) with its properties, all with string
        node ids ``DefectInspection/ResultReadyEventType[/<property>]``."""
        ident = f"{ROOT}/ResultReadyEventType"
        base = server.get_node(ua.ObjectIds.BaseEventType)
        etype = await base.add_object_type(ua.NodeId(ident, self.ns), ua.QualifiedName("ResultReadyEventType",
                                                                                         self.ns))
        for name, vtype in EVENT_PROPERTIES:
            prop = await etype.add_property(ua.NodeId(f"{ident}/{name}", self.ns),
                                            ua.QualifiedName(name, self.ns), ua.get_default_value(vtype),
                                            varianttype=vtype)
            await prop.set_modelling_rule(True)
        return etype

    async def _variable(self, parent: Node, ident: str, name: str, vtype: ua.VariantType, value: Any) -> Node:
        return await parent.add_variable(ua.NodeId(ident, self.ns), ua.QualifiedName(name, self.ns),
                                         ua.Variant(value, vtype))

    async def _camera(self, camera: str) -> CameraNodes:
        nodes = self._nodes.get(camera)
        if nodes is not None:
            return nodes
        assert self._cameras_folder is not None
        obj = await self._cameras_folder.add_object(ua.NodeId(node_id(camera), self.ns),
                                                    ua.QualifiedName(camera, self.ns))
        nodes = CameraNodes(obj)
        for name, (vtype, value) in CAMERA_VARIABLES.items():
            nodes.values[name] = await self._variable(obj, node_id(camera, name), name, vtype, value)
        management = await obj.add_object(ua.NodeId(node_id(camera, "ResultManagement"), self.ns),
                                          ua.QualifiedName("ResultManagement", self.ns))
        last_id = node_id(camera, "ResultManagement", "LastResult")
        last = await management.add_object(ua.NodeId(last_id, self.ns),
                                           ua.QualifiedName("LastResult", self.ns))
        for name, (vtype, value) in RESULT_VARIABLES.items():
            ident = node_id(camera, "ResultManagement", "LastResult", name)
            nodes.values[f"LastResult.{name}"] = await self._variable(last, ident, name, vtype, value)
        self._nodes[camera] = nodes
        return nodes

    async def _write(self, nodes: CameraNodes, name: str, value: Any) -> None:
        vtype = (RESULT_VARIABLES[name.removeprefix("LastResult.")] if name.startswith("LastResult.")
                 else CAMERA_VARIABLES[name])[0]
        await nodes.values[name].write_value(ua.DataValue(ua.Variant(value, vtype)))

    async def _apply_camera(self, camera: CameraCounters) -> None:
        nodes = await self._camera(camera.id)
        await self._write(nodes, "Line", camera.line or "")
        await self._write(nodes, "Station", camera.station or "")
        await self._write(nodes, "CameraUp", camera.connected)

    async def _apply_results(self, inspections: list[InspectionPublic]) -> None:
        for i in inspections:
            camera = i.camera_id or "_"
            nodes = await self._camera(camera)
            nodes.inspected += 1
            nodes.ng += i.verdict == NG
            classes = sorted({d.class_name for d in i.defects})
            values: dict[str, Any] = {
                "Line": i.line or "", "Station": i.station or "", "ModelVersion": i.model_version,
                "Inspected": nodes.inspected, "NG": nodes.ng,
                "Yield": (nodes.inspected - nodes.ng) / nodes.inspected,
                "LastResult.ResultId": str(i.id), "LastResult.PartId": i.part_id or "",
                "LastResult.CreationTime": _naive_utc(i.captured_at),
                "LastResult.ResultState": RESULT_COMPLETED, "LastResult.InternalRecipeId": i.model_version,
                "LastResult.DefectCount": i.defect_count, "LastResult.DefectClasses": classes,
                "LastResult.ResultContent": i.model_dump_json(),
                "LastResult.Verdict": i.verdict,  # last: a client watching it sees the rest updated
            }
            for name, value in values.items():
                await self._write(nodes, name, value)
            self._events.event.ResultId = str(i.id)
            self._events.event.PartId = i.part_id or ""
            self._events.event.ResultState = RESULT_COMPLETED
            self._events.event.CameraId = camera
            self._events.event.Verdict = i.verdict
            self._events.event.Message = ua.LocalizedText(f"{camera}: {i.verdict} (inspection {i.id})")
            await self._events.trigger()
            self.updated += 1


def _naive_utc(value: datetime) -> datetime:
    """asyncua takes naive datetimes as UTC."""
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo is not None else value

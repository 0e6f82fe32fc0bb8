"""The state of the line integrations (MQTT publisher), shown in GET /cameras and /readyz."""

from __future__ import annotations

from pydantic import Field

from app.schemas.common import PublicModel


class MqttStatePublic(PublicModel):
    """The MQTT publisher (app.line.mqtt): its broker, connection and queue."""

    broker: str = Field(description="host:port of the broker")
    client_id: str
    connected: bool
    queued: int = Field(description="messages waiting to be sent or acknowledged by the broker")
    published: int = Field(description="messages the broker acknowledged since the start")
    dropped: int = Field(description="messages dropped because the queue was full (the records are stored)")
    last_error: str | None = Field(description="why the broker is not connected; null while connected")

"""A real Mosquitto broker on a free loopback port, and a subscriber that records what arrives."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

MOSQUITTO = shutil.which("mosquitto") or next((p for p in ("/usr/sbin/mosquitto",) if Path(p).exists()), None)
MOSQUITTO_MISSING = "the mosquitto broker is not installed (Debian: apt-get install mosquitto; .ci/run does)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """``start()``/``stop()`` a mosquitto on one port (the same port across restarts); with ``users``
    only those may connect (user name -> password)."""

    def __init__(self, folder: Path, users: dict[str, str] | None = None) -> None:
        if MOSQUITTO is None:
            pytest.skip(MOSQUITTO_MISSING)
        self.port = free_port()
        self.folder = folder
        self.proc: subprocess.Popen | None = None
        lines = [f"listener {self.port} 127.0.0.1", "persistence false", f"user {getpass.getuser()}"]
        if users:
            passwords = folder / "passwords"
            passwords.touch(mode=0o600)
            for name, password in users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(passwords), name, password], check=True,
                               capture_output=True)
            lines += ["allow_anonymous false", f"password_file {passwords}"]
        else:
            lines.append("allow_anonymous true")
        self.config = folder / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")

    def start(self) -> Broker:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool


class Subscriber:
    """A paho client subscribed to ``topic`` that keeps every message."""

    def __init__(self, port: int, topic: str = "#", username: str | None = None,
                 password: str | None = None) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list[Received] = []
        self._changed = threading.Condition()
        self.client = paho.Client(CallbackAPIVersion.VERSION2)
        if username:
            self.client.username_pw_set(username, password)
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(10), "the subscriber did not subscribe"

    def _on_message(self, _client, _userdata, msg) -> None:
        with self._changed:
            self.messages.append(Received(msg.topic, msg.payload, bool(msg.retain)))
            self._changed.notify_all()

    def on(self, topic: str) -> list[Received]:
        with self._changed:
            return [m for m in self.messages if m.topic == topic]

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout: float = 20.0) -> list[Received]:
        with self._changed:
            assert self._changed.wait_for(lambda: predicate(self.messages), timeout), \
                f"not received; got {[(m.topic, m.payload[:80]) for m in self.messages]}"
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll a condition of a running service (its HTTP state), failing after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)

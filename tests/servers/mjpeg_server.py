"""An MJPEG-over-HTTP camera for drills, with the project's virtual environment Python (OpenCV, NumPy):
``python tests/servers/mjpeg_server.py --port 8081 --fps 25 [--user u --password p]``.

``/stream`` is ``multipart/x-mixed-replace`` JPEG frames; ``/text`` answers text/plain (a page that is no
video); any other path is 404; with ``--password`` every request without those Basic credentials is 401.
The top row of each frame carries the send time (milliseconds, 32 black or white 20-px blocks) so a
receiver on the same machine can measure its latency: :func:`sent_ms`. Prints ``ready`` once listening.
"""

from __future__ import annotations

import argparse
import base64
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np

BLOCK = 20
BITS = 32


def stamp(image: np.ndarray, ms: int) -> None:
    for bit in range(BITS):
        image[:BLOCK, bit * BLOCK:(bit + 1) * BLOCK] = 255 if (ms >> bit) & 1 else 0


def sent_ms(image: np.ndarray) -> int:
    """The send time a frame carries (milliseconds modulo 2**32)."""
    row = image[BLOCK // 4:BLOCK * 3 // 4]
    return sum(1 << bit for bit in range(BITS)
               if row[:, bit * BLOCK + BLOCK // 4:bit * BLOCK + BLOCK * 3 // 4].mean() > 127)


def now_ms() -> int:
    return time.time_ns() // 1_000_000 & 0xFFFFFFFF


def make_handler(args: argparse.Namespace) -> type[BaseHTTPRequestHandler]:
    expected = ("Basic " + base64.b64encode(f"{args.user}:{args.password}".encode()).decode()
                if args.password else None)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, *_: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - the http.server hook
            if expected is not None and self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="camera"')
                self.end_headers()
                return
            if self.path == "/text":
                body = b"this is no camera\n" * 100
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            if self.path != "/stream":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            self._stream()

        def _stream(self) -> None:
            rng = np.random.default_rng(0)
            background = rng.integers(0, 256, (args.height, args.width, 3), np.uint8)
            period = 1.0 / args.fps
            due = time.monotonic()
            n = 0
            try:
                while True:
                    image = np.roll(background, n * 4, axis=1)
                    stamp(image, now_ms())
                    ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
                    assert ok
                    data = jpeg.tobytes()
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                     + str(len(data)).encode() + b"\r\n\r\n" + data + b"\r\n")
                    self.wfile.flush()
                    n += 1
                    due += period
                    time.sleep(max(0.0, due - time.monotonic()))
            except (BrokenPipeError, ConnectionResetError):
                pass

    return Handler


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--fps", type=float, default=25.0)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--user", default="")
    p.add_argument("--password", default="")
    args = p.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(args))
    server.daemon_threads = True
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()

"""An RTSP camera for drills and benches: Debian's gst-rtsp-server serving H.264 from a live test
pattern, or (``--file``) an H.264 MP4 file as it is, paced by its timestamps, without re-encoding (a
bench's cameras then cost the machine only their decoding).

Run with the system Python that has the GObject bindings (python3-gi, gir1.2-gst-rtsp-server-1.0):
``/usr/bin/python3 tests/servers/rtsp_server.py --port 8554 --path /cam --width 640 --height 480 --fps 30``.
Prints ``ready`` once listening. SIGSTOP freezes it with the sockets open (a stalled camera); SIGKILL is
a camera that went away.
"""

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/cam")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--file", help="serve this H.264 MP4 (`ffmpeg -c:v libx264`), not a test pattern")
    args = p.parse_args()
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    if args.file:
        launch = (f"( filesrc location={args.file} ! qtdemux ! h264parse "
                  "! rtph264pay name=pay0 pt=96 config-interval=1 )")
    else:
        size = f"width={args.width},height={args.height},framerate={args.fps}/1"
        launch = (f"( videotestsrc is-live=true pattern=ball ! video/x-raw,{size} ! x264enc tune=zerolatency "
                  f"speed-preset=ultrafast key-int-max={args.fps} "
                  "! rtph264pay name=pay0 pt=96 config-interval=1 )")
    factory.set_launch(launch)
    factory.set_shared(True)
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on port {args.port}")
    loop = GLib.MainLoop()
    signal.signal(signal.SIGTERM, lambda *_: loop.quit())
    print("ready", flush=True)
    loop.run()


if __name__ == "__main__":
    main()

"""An RTSP camera on loopback for the fault tests: gst-rtsp-server serving a live test pattern.

Run with Debian's Python (the GObject bindings are Debian packages: gir1.2-gst-rtsp-server-1.0,
python3-gst-1.0, gstreamer1.0-rtsp, gstreamer1.0-plugins-good):

    /usr/bin/python3 tests/rtsp_camera.py PORT [--path /cam] [--size 320x240] [--fps 15]

Serves ``rtsp://127.0.0.1:PORT/cam`` (motion JPEG over RTP: only plugins-good is needed) and
prints ``ready rtsp://…`` on stdout once it listens. It runs until killed.
"""

from __future__ import annotations

import argparse
import sys


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("port", type=int)
    ap.add_argument("--path", default="/cam")
    ap.add_argument("--size", default="320x240")
    ap.add_argument("--fps", type=int, default=15)
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))

    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f"( videotestsrc is-live=true pattern=ball ! video/x-raw,format=I420,width={width},"
        f"height={height},"
        f"framerate={args.fps}/1 ! jpegenc quality=80 ! rtpjpegpay name=pay0 pt=26 )"
    )
    factory.set_shared(True)  # every client (and every reconnect) watches the same camera
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
        return 1
    print(f"ready rtsp://127.0.0.1:{args.port}{args.path}", flush=True)
    GLib.MainLoop().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

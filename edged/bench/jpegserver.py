"""An MJPEG camera for the `jpeg` rows of `edged bench`: a child process serving
`multipart/x-mixed-replace` JPEGs on 127.0.0.1 at a set rate, as an IP camera does.

    python -m edged.bench.jpegserver WIDTH HEIGHT FPS    # prints its port, then serves

The frames are the synthetic source's moving pattern, encoded once at start-up
(a ring of `RING` JPEGs at quality 85), so serving a frame costs the camera
process one socket write, not an encode: the daemon's side is what is measured.
Each client gets its own stream, paced on an absolute schedule; a client that
stops reading (a paused daemon) blocks only its own thread.
"""

from __future__ import annotations

import http.server
import socketserver
import sys
import time

import cv2

from edged.sources.synthetic import SyntheticSource

RING = 16
QUALITY = 85
BOUNDARY = b"edgedbench"


def encode_ring(size: tuple[int, int]) -> list[bytes]:
    source = SyntheticSource(size=size, fps=0)
    source.open()
    ring = []
    for _ in range(RING):
        rgb = source.read()
        assert rgb is not None
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                                [cv2.IMWRITE_JPEG_QUALITY, QUALITY])
        assert ok
        ring.append(b"--" + BOUNDARY + b"\r\nContent-Type: image/jpeg\r\nContent-Length: "
                    + str(len(jpeg)).encode() + b"\r\n\r\n" + bytes(jpeg) + b"\r\n")
    source.close()
    return ring


def serve(size: tuple[int, int], fps: float) -> None:
    ring, interval = encode_ring(size), 1.0 / fps

    class Stream(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type",
                             f"multipart/x-mixed-replace; boundary={BOUNDARY.decode()}")
            self.end_headers()
            due, i = time.monotonic(), 0
            try:
                while True:
                    self.wfile.write(ring[i % RING])
                    self.wfile.flush()
                    i += 1
                    due = max(due + interval, time.monotonic() - interval)  # no bursts
                    time.sleep(max(0.0, due - time.monotonic()))
            except OSError:
                return

        def log_message(self, *args: object) -> None:
            pass

    socketserver.ThreadingTCPServer.allow_reuse_address = True
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Stream)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    serve((int(sys.argv[2]), int(sys.argv[1])), float(sys.argv[3]))

"""A STAND-IN for `cv2.VideoCapture(index, cv2.CAP_V4L2)` on a USB (UVC) camera: no
V4L2 device can exist here. It follows what OpenCV's V4L2 backend (cap_v4l.cpp)
does with the calls edged makes: the format OpenCV picks on its own is the first
of its list the camera offers (uncompressed before MJPEG); setting FOURCC to one
the camera lacks still succeeds with another format (read it back to know); a
size the camera lacks is adjusted by the driver; with CONVERT_RGB off an MJPEG
frame is one row of the JPEG's bytes (1, n), with it on, BGR pixels OpenCV decoded.
The pictures are edged's synthetic pattern, or one `picture` (a camera looking at a
still scene) at the size asked; JPEGs are OpenCV's, quality 90; with `fps`, a read
waits for the next frame as a camera's does.

`install_in_subprocesses` makes `edged run` in a child process open this stand-in
(a sitecustomize.py on its PYTHONPATH), for tests of the real daemon."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edged.sources.synthetic import pattern

OPENCV_ORDER = ("BGR3", "YUYV", "MJPG")  # the part of OpenCV's try order the stand-in offers


def fourcc(text: str) -> int:
    return int(cv2.VideoWriter.fourcc(*text))


class StandinV4l2Camera:
    """What one camera offers, shared by every capture opened on it."""

    def __init__(self, formats: dict[str, list[tuple[int, int]]],
                 corrupt: frozenset[int] = frozenset(), picture: np.ndarray | None = None,
                 fps: float = 0.0) -> None:
        self.formats = formats  # fourcc -> [(width, height)] offered
        self.corrupt = corrupt  # frame numbers sent as bytes that are no JPEG
        self.picture, self.fps = picture, fps
        self.sent: list[bytes] = []  # each JPEG handed over undecoded
        self.fourccs_asked: list[str] = []
        self.decoded_by_opencv = 0
        self.frame = 0

    def capture(self, index: Any, api: int = 0) -> StandinCapture:
        assert api == cv2.CAP_V4L2, "edged opens V4L2 devices with the V4L2 backend"
        return StandinCapture(self)


class StandinCapture:
    def __init__(self, camera: StandinV4l2Camera) -> None:
        self.camera = camera
        self.opened = True
        self.convert_rgb = True
        self.palette = next(f for f in OPENCV_ORDER if f in camera.formats)
        self.size = camera.formats[self.palette][0]
        self._want_w = self._want_h = 0

    def isOpened(self) -> bool:
        return self.opened

    def release(self) -> None:
        self.opened = False

    def _reset(self, palette: str) -> None:
        offered = self.camera.formats.get(palette)
        if offered is None:  # autosetup: the first of OpenCV's list the camera offers
            palette = next(f for f in OPENCV_ORDER if f in self.camera.formats)
            offered = self.camera.formats[palette]
        self.palette = palette
        want = (self._want_w or self.size[0], self._want_h or self.size[1])
        # The driver adjusts to the nearest size it has.
        self.size = min(offered, key=lambda s: abs(s[0] - want[0]) + abs(s[1] - want[1]))

    def set(self, prop: int, value: float) -> bool:
        if prop == cv2.CAP_PROP_FOURCC:
            text = "".join(chr((int(value) >> 8 * i) & 0xFF) for i in range(4))
            self.camera.fourccs_asked.append(text)
            self._reset(text)
            return True
        if prop == cv2.CAP_PROP_FRAME_WIDTH:
            self._want_w = int(value)
        elif prop == cv2.CAP_PROP_FRAME_HEIGHT:
            self._want_h = int(value)
            self._reset(self.palette)
        elif prop == cv2.CAP_PROP_CONVERT_RGB:
            self.convert_rgb = bool(value)
        return True

    def get(self, prop: int) -> float:
        return {cv2.CAP_PROP_FOURCC: float(fourcc(self.palette)),
                cv2.CAP_PROP_FRAME_WIDTH: float(self.size[0]),
                cv2.CAP_PROP_FRAME_HEIGHT: float(self.size[1]),
                cv2.CAP_PROP_CONVERT_RGB: float(self.convert_rgb)}.get(prop, 0.0)

    def read(self) -> tuple[bool, np.ndarray | None]:
        if not self.opened:
            return False, None
        cam = self.camera
        if cam.fps:
            time.sleep(1.0 / cam.fps)
        n, cam.frame = cam.frame, cam.frame + 1
        w, h = self.size
        rgb = pattern(n, h, w) if cam.picture is None else cv2.resize(cam.picture, (w, h))
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        if self.palette != "MJPG":
            return True, bgr
        if n in cam.corrupt:
            data = b"\xff\xd8not a picture at all" * 20
        else:
            ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
            assert ok
            data = encoded.tobytes()
        if self.convert_rgb:
            cam.decoded_by_opencv += 1
            return True, cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        cam.sent.append(data)
        return True, np.frombuffer(data, np.uint8).reshape(1, -1).copy()


_SITECUSTOMIZE = """\
import os
if os.environ.get("EDGED_STANDIN_V4L2_PICTURE"):
    import sys
    sys.path.insert(0, {tests!r})
    import cv2
    import v4l2_standin
    picture = cv2.imread(os.environ["EDGED_STANDIN_V4L2_PICTURE"], cv2.IMREAD_COLOR)[..., ::-1]
    camera = v4l2_standin.StandinV4l2Camera(v4l2_standin.WEBCAM, picture=picture, fps=30.0)
    cv2.VideoCapture = camera.capture
"""

WEBCAM = {"YUYV": [(640, 480), (1280, 720)], "MJPG": [(640, 480), (1280, 720), (1920, 1080)]}


def install_in_subprocesses(directory: Path, picture: Path) -> dict[str, str]:
    """The environment under which a child Python opens a stand-in webcam (WEBCAM,
    30 fps) showing `picture` instead of any V4L2 device."""
    directory.mkdir(parents=True, exist_ok=True)
    tests = str(Path(__file__).resolve().parent)
    (directory / "sitecustomize.py").write_text(_SITECUSTOMIZE.format(tests=tests))
    path = os.pathsep.join(p for p in (str(directory), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "EDGED_STANDIN_V4L2_PICTURE": str(picture)}

"""What size a JPEG camera decodes at (edged.service.wiring.jpeg_min_size), per config."""

from __future__ import annotations

from typing import Any

import pytest

from edged.config import Config
from edged.service.wiring import jpeg_min_size


def _cfg(**sections: dict[str, Any]) -> Config:
    base = Config()
    return base.model_copy(update={
        name: getattr(base, name).model_copy(update=values) for name, values in sections.items()})


HTTP = {"kind": "stream", "uri": "http://cam.local/video.mjpg"}


@pytest.mark.parametrize(("sections", "want"), [
    ({"source": HTTP}, (224, 224)),
    ({"source": {"kind": "folder", "uri": "/srv/frames"}}, (224, 224)),
    ({"source": {**HTTP, "uri": "HTTPS://cam.local/snap.jpg"}}, (224, 224)),
    # Event snapshots are cut from the frame: at least their width.
    ({"source": HTTP, "output": {"publish": "both"}}, (224, 640)),
    ({"source": HTTP, "output": {"publish": "events"},
      "events": {"snapshot": Config().events.snapshot.model_copy(update={"enabled": False})}},
     (224, 224)),
    ({"source": {**HTTP, "jpeg_decode": "full"}}, None),
    ({"source": HTTP, "cascade": {"model": "birds"}}, None),  # crops need the detail
    # A V4L2 camera in MJPEG (asked for by default; one without it ignores the size).
    ({"source": {"kind": "v4l2"}}, (224, 224)),
    ({"source": {"kind": "v4l2", "v4l2_format": "mjpeg"}}, (224, 224)),
    # Not decoded by edged: RTSP (ffmpeg), a V4L2 camera's own format, a video file.
    ({"source": {"kind": "stream", "uri": "rtsp://cam.local/h264"}}, None),
    ({"source": {"kind": "v4l2", "v4l2_format": "uncompressed"}}, None),
    ({"source": {"kind": "video", "uri": "/srv/a.mp4"}}, None),
])
def test_a_jpeg_camera_decodes_for_the_model_snapshots_and_cascade(
        sections: dict[str, dict[str, Any]], want: tuple[int, int] | None) -> None:
    assert jpeg_min_size(_cfg(**sections), (224, 224)) == want

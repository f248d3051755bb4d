"""Native libraries' own stderr output, through the real commands (issue 15.5, 14.9).

The TFLite runtime prints "INFO: Created TensorFlow Lite XNNPACK delegate for
CPU." whenever it builds an interpreter, and libpng "libpng error: ..." on
every pass over a damaged image, beside edged's own single line (libjpeg under
OpenCV said "Premature end of JPEG file" too; JPEGs are now decoded through
simplejpeg, which says nothing). The journal must carry edged's lines only: the daemon
routes native output into its log (DEBUG, or ERROR for what a crash leaves),
the one-shot commands drop it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import cv2
from broker import Mosquitto, Subscriber
from daemon_helpers import FRAMES, MODELS, DaemonProcess, base_config, write_config
from faults_helpers import copy_digit_frames, is_stats
from reload_helpers import wait_log

MODEL = MODELS / "digits_int8.tflite"
XNNPACK = "XNNPACK"
NATIVE_WORDS = ("XNNPACK", "Premature end of JPEG", "libpng", "[ WARN", "Corrupt JPEG")


def _edged(*args: str, env: dict[str, str] | None = None, timeout: float = 240
           ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edged", *args], capture_output=True,
                          text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL,
                          env={**os.environ, **(env or {})})


def _damaged_images(folder: Path) -> tuple[Path, Path]:
    """A truncated JPEG (decodes, its missing rows grey) and a PNG with a bad CRC (refused)."""
    image = cv2.imread(str(sorted(FRAMES.glob("digit_*.png"))[0]))
    jpeg = cv2.imencode(".jpg", cv2.resize(image, (64, 64)))[1].tobytes()
    truncated = folder / "zz_truncated.jpg"
    truncated.write_bytes(jpeg[: len(jpeg) // 2])
    png = bytearray(cv2.imencode(".png", image)[1].tobytes())
    png[60:80] = bytes(20)
    bad_crc = folder / "zz_bad_crc.png"
    bad_crc.write_bytes(bytes(png))
    return truncated, bad_crc


def test_no_command_prints_the_runtimes_chatter(tmp_path: Path, mosquitto: Mosquitto) -> None:
    config = write_config(tmp_path / "edged.toml",
                          base_config(mosquitto.port, model=MODEL, frames=FRAMES))
    for args in (("check-config", str(config)), ("inspect", str(MODEL)),
                 ("inspect", "--json", str(MODEL)),
                 ("bench", "--quick", "--rows", "limit,inprocess", "--frames", "60",
                  "--runs", "1")):
        done = _edged(*args)
        assert done.returncode == 0, (args, done.stderr)
        assert XNNPACK not in done.stdout + done.stderr, (args, done.stderr)
    demo = _edged("demo", "--count", "2", timeout=120)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert XNNPACK not in demo.stdout + demo.stderr, demo.stderr
    with Subscriber(mosquitto.port, "edged/#") as sub, DaemonProcess(config) as daemon:
        sub.wait_count(lambda m: m.topic.endswith("/results"), 3, timeout=30)
        assert daemon.stop() == 0
    assert XNNPACK not in daemon.log_text(), daemon.log_text()
    # Asked for, it is there: the runtime still runs the XNNPACK delegate.
    shown = _edged("check-config", str(config), env={"EDGED_NATIVE_STDERR": "show"})
    assert XNNPACK in shown.stderr


def test_damaged_images_leave_edgeds_one_line_and_no_library_noise(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    folder = copy_digit_frames(tmp_path / "frames")
    truncated, bad_crc = _damaged_images(folder)
    cfg = base_config(mosquitto.port, model=MODEL, frames=folder, source={"fps": 100.0})
    path = write_config(tmp_path / "edged.toml", cfg)
    with Subscriber(mosquitto.port, "edged/#") as sub, DaemonProcess(path) as daemon:
        # Several passes over the folder: the PNG refused each time.
        sub.wait_for(is_stats(lambda s: s["frames_skipped"] >= 4), timeout=60)
        info_log = daemon.log_text()
        cfg["logging"] = {"level": "debug"}
        write_config(path, cfg)
        daemon.send(signal.SIGHUP)
        wait_log(daemon, "reload: applied")
        # The log, not the stats: a stats message may count passes made before the reload.
        wait_log(daemon, "edged.native: libpng error", timeout=30)
        assert daemon.stop() == 0
    assert [w for w in NATIVE_WORDS if w in info_log] == [], info_log
    assert info_log.count(f"skipping unreadable image {bad_crc}") == 1, info_log
    assert str(truncated) not in info_log  # it decodes: a frame, nothing to say
    # With debugging on, the libraries' words are in edged's log, as its lines.
    debug_log = daemon.log_text()[len(info_log):]
    native = [line for line in debug_log.splitlines() if " edged.native: " in line]
    assert any("libpng error" in line for line in native), debug_log[-3000:]
    # The truncated JPEG went through simplejpeg (edged.sources.jpeg): not a word.
    assert not any("JPEG" in line for line in native), native
    assert all(" DEBUG " in line for line in native), native
    stray = [line for line in debug_log.splitlines()
             if any(w in line for w in NATIVE_WORDS) and " edged.native: " not in line]
    assert stray == [], stray


CHILD = textwrap.dedent("""
    import os, subprocess, sys, time
    from edged.system import nativeout
    from edged.system.logsetup import setup_logging
    assert nativeout.route_native_output_to_log()
    setup_logging("info")
    os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n")
    # A child of ours dying the way libedgetpu does: its last words on fd 2.
    subprocess.run(["sh", "-c", "echo 'F0000 00:00:00.1 usb.cc:12] Check failed: "
                    "device gone' >&2; kill -ABRT $$"])
    print("python's own stderr", file=sys.stderr)
    time.sleep(0.5)
""")


def test_what_a_dying_child_prints_reaches_the_log_as_an_error(tmp_path: Any) -> None:
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    [crash] = [line for line in lines if "Check failed" in line]
    assert " ERROR   edged.native: F0000 00:00:00.1 usb.cc:12] Check failed: device gone" \
        in crash, lines
    assert XNNPACK not in done.stderr  # chatter: DEBUG, below the level
    assert "python's own stderr" in lines

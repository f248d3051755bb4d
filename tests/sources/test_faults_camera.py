"""Camera faults: a file that vanishes, a stream that stalls, a video that ends,
corrupt JPEG parts. The daemon never dies; it reopens with backoff, says so on
the stats topic, and withholds the systemd watchdog while frames do not
progress (a real datagram socket stands in for systemd's NOTIFY_SOCKET).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
from daemon_helpers import DaemonProcess, base_config, results, write_config
from faults_helpers import (
    DIGITS,
    MjpegServer,
    NotifyRecorder,
    is_stats,
    jpeg_frames,
    make_video,
    record_figure,
    result_after,
    stats_after,
    stats_of,
    subscribed,
    wait_until,
)
from notify_helpers import abstract_listener

from edged.bench.procstat import cpu_seconds

WATCHDOG_USEC = "1000000"  # a ping every 0.5 s while healthy
FRAMES_WINDOW_S = 10.0  # the daemon's "no frames inferred recently" window
BACKOFF = {"reopen_backoff_s": 0.2, "reopen_backoff_max_s": 1.0}


def test_video_file_that_vanishes_is_retried_with_the_watchdog_fed(
        tmp_path: Path, mosquitto: Any) -> None:
    """A source retried on schedule is waited out inside the daemon: the watchdog
    keeps going (a restart by systemd would only do what the reopen does), and
    STATUS= and the stats say what is missing."""
    video = make_video(tmp_path / "clip.avi")
    saved = video.read_bytes()
    config = write_config(tmp_path / "edged.toml", base_config(
        mosquitto.port, model=DIGITS, frames=tmp_path,
        source={"kind": "video", "uri": str(video), "loop": True, **BACKOFF}))
    with abstract_listener() as listener, NotifyRecorder(listener) as notify, \
            subscribed(mosquitto.port) as sub, \
            DaemonProcess(config, env={"NOTIFY_SOCKET": listener.env_value,
                                       "WATCHDOG_USEC": WATCHDOG_USEC}) as daemon:
        sub.wait_count(lambda m: m.topic.endswith("/results"), 3, timeout=30)
        wait_until(lambda: len(notify.pings()) >= 2, 10, "watchdog pings while healthy")
        video.unlink()
        gone, gone_wall = time.monotonic(), time.time()
        lost = sub.wait_for(stats_after(gone_wall, lambda s: s["source"] == "reopening"),
                            timeout=10)
        assert "video file" in orjson.loads(lost.payload)["last_error"]
        # Past the frames window: still pinged, never more than a few intervals apart.
        wait_until(lambda: time.monotonic() - gone > FRAMES_WINDOW_S + 2, 30, "the window")
        during_pings = notify.pings(after=gone)
        gaps = [b - a for a, b in zip([gone, *during_pings], during_pings, strict=False)]
        assert during_pings and max(gaps) < 2.0, gaps
        assert daemon.proc.poll() is None, daemon.log_text()
        during = stats_of(sub.messages)[-1]
        video.write_bytes(saved)
        back_wall = time.time()
        first = sub.wait_for(result_after(back_wall), timeout=15)
        assert daemon.stop() == 0
    log = daemon.log_text()
    assert "watchdog withheld" not in log, log
    assert any("source reopening" in s for s in notify.statuses()), notify.statuses()
    assert not any("unhealthy" in s for s in notify.statuses()), notify.statuses()
    # Backoff: about 12 s away at 0.2 s doubling to 1 s is a dozen attempts, not hundreds.
    reopens = during["source_reopens"]
    assert 2 <= reopens <= 40, during
    record_figure("camera_video_vanished", longest_ping_gap_s=round(max(gaps), 2),
                  reopen_attempts=reopens, results_after_restore_s=round(
                      first.received_at - back_wall, 2))


def _stream_config(tmp_path: Path, port: int, url: str) -> Path:
    return write_config(tmp_path / "edged.toml", base_config(
        port, model=DIGITS, frames=tmp_path, source={"kind": "stream", "uri": url, **BACKOFF}))


def test_mjpeg_stream_that_stalls_is_reopened_and_resumes(tmp_path: Path,
                                                         mosquitto: Any) -> None:
    with MjpegServer(jpeg_frames(), fps=20) as camera:
        config = _stream_config(tmp_path, mosquitto.port, camera.url)
        with subscribed(mosquitto.port) as sub, DaemonProcess(config) as daemon:
            sub.wait_count(lambda m: m.topic.endswith("/results"), 3, timeout=30)
            camera.stall()
            stalled = time.time()
            # The MJPEG reader's read timeout (5 s) notices the silence.
            lost = sub.wait_for(stats_after(stalled, lambda s: s["source"] == "reopening"),
                                timeout=20)
            figures = orjson.loads(lost.payload)
            assert "timed out" in figures["last_error"], figures
            # Housekeeping carried on: stats kept coming while the camera was silent.
            assert len([m for m in sub.on("/stats") if m.received_at > stalled]) >= 3
            camera.resume()
            resumed = time.time()
            first = sub.wait_for(result_after(resumed), timeout=20)
            running = sub.wait_for(stats_after(first.received_at,
                                                lambda s: s["source"] == "running"), timeout=10)
            assert orjson.loads(running.payload)["source_reopens"] >= 1
            assert daemon.stop() == 0
    assert "Traceback" not in daemon.log_text()
    record_figure("camera_mjpeg_stall", detected_after_s=round(lost.received_at - stalled, 2),
                  results_after_resume_s=round(first.received_at - resumed, 3),
                  connections=camera.connections)


def test_mjpeg_stream_that_drips_is_declared_stalled_and_last_error_clears(
        tmp_path: Path, mosquitto: Any) -> None:
    with MjpegServer(jpeg_frames(), fps=20) as camera:
        config = _stream_config(tmp_path, mosquitto.port, camera.url)
        with subscribed(mosquitto.port) as sub, DaemonProcess(config) as daemon:
            sub.wait_count(lambda m: m.topic.endswith("/results"), 3, timeout=30)
            camera.drip()  # a byte every 2 s: no single read ever times out
            dripping = time.time()
            lost = sub.wait_for(stats_after(dripping, lambda s: s["source"] == "reopening"),
                                timeout=20)
            figures = orjson.loads(lost.payload)
            assert figures["last_error"].endswith("no complete frame for 5 s (stalled)"), \
                figures
            camera.resume()
            resumed = time.time()
            first = sub.wait_for(result_after(resumed), timeout=20)
            # Recovered: the stale error is gone (it used to stay until the next one).
            clear = sub.wait_for(stats_after(first.received_at, lambda s: True), timeout=10)
            assert daemon.stop() == 0
    cleared = orjson.loads(clear.payload)
    assert cleared["source"] == "running" and cleared["last_error"] == "", cleared
    assert "Traceback" not in daemon.log_text()
    record_figure("camera_mjpeg_drip", detected_after_s=round(lost.received_at - dripping, 2),
                  results_after_resume_s=round(first.received_at - resumed, 3))


def test_corrupt_jpeg_parts_are_skipped_counted_and_not_a_reopen(tmp_path: Path,
                                                                mosquitto: Any) -> None:
    with MjpegServer(jpeg_frames(), fps=30) as camera:
        camera.corrupt_every = 3
        config = _stream_config(tmp_path, mosquitto.port, camera.url)
        with subscribed(mosquitto.port) as sub, DaemonProcess(config) as daemon:
            sub.wait_count(lambda m: m.topic.endswith("/results"), 20, timeout=30)
            stats = sub.wait_for(is_stats(lambda s: s.get("frames_skipped", 0) >= 3), timeout=10)
            figures = orjson.loads(stats.payload)
            assert figures["source"] == "running" and figures["source_reopens"] == 0, figures
            assert daemon.stop() == 0
    log = daemon.log_text()
    assert "skipped a corrupt JPEG part" in log, log
    assert log.count("skipped a corrupt JPEG part") == 1, "rate-limited: one warning a minute"
    assert camera.connections == 1
    record_figure("camera_corrupt_jpeg", corrupt_sent=camera.corrupt_sent,
                  skipped=figures["frames_skipped"])


def test_video_that_ends_is_reported_ended_and_the_daemon_idles(tmp_path: Path,
                                                              mosquitto: Any) -> None:
    video = make_video(tmp_path / "clip.avi", frames=30)
    config = write_config(tmp_path / "edged.toml", base_config(
        mosquitto.port, model=DIGITS, frames=tmp_path,
        source={"kind": "video", "uri": str(video), "loop": False, **BACKOFF}))
    with abstract_listener() as listener, NotifyRecorder(listener) as notify, \
            subscribed(mosquitto.port) as sub, \
            DaemonProcess(config, env={"NOTIFY_SOCKET": listener.env_value,
                                       "WATCHDOG_USEC": WATCHDOG_USEC}) as daemon:
        ended = sub.wait_for(is_stats(lambda s: s["source"] == "ended"), timeout=30)
        figures = orjson.loads(ended.payload)
        assert figures["source_reopens"] == 0, figures
        # Ended is a state, not a busy loop: the daemon sits nearly idle.
        time.sleep(1.0)
        cpu0 = cpu_seconds(daemon.pid)
        time.sleep(3.0)
        idle_cpu = cpu_seconds(daemon.pid) - cpu0
        # An ended video is finished on purpose: the watchdog keeps going, so
        # systemd does not restart the daemon and replay it.
        wait_until(lambda: len(notify.pings(after=time.monotonic() - 1.0)) >= 1, 5,
                   "watchdog pings after the video ended")
        assert daemon.proc.poll() is None
        assert daemon.stop() == 0
    seqs = sorted(d["seq"] for d in results(sub.messages))
    assert seqs == list(range(30)), "every frame once, none replayed"
    assert idle_cpu < 1.0, f"{idle_cpu:.2f} s of CPU in 3 s after the video ended"
    assert "ended" in daemon.log_text()
    record_figure("camera_video_ended", idle_cpu_s_per_3s=round(idle_cpu, 3))


def test_camera_device_that_is_gone_is_retried_with_backoff_and_reported(
        tmp_path: Path, mosquitto: Any) -> None:
    device = "/dev/video-edged-test-unplugged"  # never exists: a camera pulled out
    config = write_config(tmp_path / "edged.toml", base_config(
        mosquitto.port, model=DIGITS, frames=tmp_path,
        source={"kind": "v4l2", "uri": device, **BACKOFF}))
    with subscribed(mosquitto.port) as sub, DaemonProcess(config) as daemon:
        started = time.time()
        first = sub.wait_for(is_stats(lambda s: s["source"] == "reopening"), timeout=30)
        time.sleep(4.0)
        latest = stats_of(sub.messages)[-1]
        assert latest["last_error"] == f"camera device not found: {device}", latest
        # 0.2 s doubling to 1 s: a handful of attempts in a few seconds, not a hot loop.
        elapsed = time.time() - started
        assert 2 <= latest["source_reopens"] <= elapsed / 0.2 + 2, latest
        assert not sub.on("/results")
        assert daemon.proc.poll() is None
        assert daemon.stop() == 0
    assert daemon.log_text().count(f"camera device not found: {device}") == 1, \
        "repeats of the same failure go to debug, not the journal"
    record_figure("camera_device_gone", reopens=latest["source_reopens"],
                  over_s=round(latest["at"] - first.received_at, 1))

"""Thread names reach the kernel, where `top -H` and `ps -L` read them."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from edged.system.threads import COMM_MAX, NamedThread, set_os_thread_name, sleep_unless


def _kernel_name(native_id: int) -> str:
    return Path(f"/proc/self/task/{native_id}/comm").read_text().rstrip("\n")


def test_a_named_thread_tells_the_kernel_its_name_cut_to_what_the_kernel_keeps() -> None:
    seen: dict[str, str] = {}

    def look() -> None:
        seen["comm"] = _kernel_name(threading.get_native_id())

    for name, expected in (("edged-mqtt", "edged-mqtt"),
                           ("edged-a-much-longer-name", "edged-a-much-lo")):
        t = NamedThread(target=look, name=name)
        t.start()
        t.join()
        assert seen["comm"] == expected
        assert len(expected) <= COMM_MAX


def test_naming_is_per_thread_and_leaves_the_others_alone() -> None:
    main_before = _kernel_name(threading.get_native_id())
    t = NamedThread(target=lambda: None, name="edged-other")
    t.start()
    t.join()
    assert _kernel_name(threading.get_native_id()) == main_before


def test_a_name_outside_ascii_is_still_set() -> None:
    out: list[bool] = []
    t = threading.Thread(target=lambda: out.append(set_os_thread_name("edged-ünï")))
    t.start()
    t.join()
    assert out == [True]


def test_sleep_unless_sleeps_a_frame_and_is_cut_short_on_a_longer_wait() -> None:
    stop = threading.Event()
    t0 = time.monotonic()
    assert sleep_unless(stop, 0.02) is True  # a frame's wait: slept
    assert time.monotonic() - t0 >= 0.02
    threading.Timer(0.1, stop.set).start()
    t0 = time.monotonic()
    assert sleep_unless(stop, 30.0) is False  # a long one ends when stop is set
    assert time.monotonic() - t0 < 5.0
    assert sleep_unless(stop, 0.01) is False  # set: said even after a short sleep
    assert sleep_unless(stop, -1.0) is False  # and at once for a wait already due

"""Results sent from the publishing thread (`PublishLoop.send_here`), against a real
mosquitto: what is sent from there, that several threads and the network thread never
mix their packets, and that a broker lost meanwhile costs no exception."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from broker import Mosquitto, Subscriber
from publisher_helpers import publisher, result_payload, seq_of

from edged.mqtt.publisher import Publisher


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "mosquitto") as b:
        yield b


def record_threads(pub: Publisher) -> list[str]:
    """The name of the thread of each paho publish (the real call, passed through)."""
    names: list[str] = []
    client = pub._client
    real = client.publish

    def publish(*args: Any, **kwargs: Any) -> Any:
        names.append(threading.current_thread().name)
        return real(*args, **kwargs)

    client.publish = publish  # type: ignore[method-assign]
    return names


def test_a_result_is_sent_from_the_callers_thread_while_the_network_thread_waits(
        broker: Mosquitto) -> None:
    pub = publisher(broker.port)
    try:
        assert pub.wait_connected(5) and pub.wait_idle(5)
        threads = record_threads(pub)
        with Subscriber(broker.port, "edged/cam-1/results") as sub:
            for seq in range(40):
                pub.publish_result(result_payload(seq))
                time.sleep(0.005)
            got = sub.wait_count(lambda m: True, 40)
        assert [seq_of(m.payload) for m in got] == list(range(40))
        assert pub.wait_idle(5)
        c = pub.counters()
        assert (c.published, c.acked, c.dropped) == (40, 40, 0)
        # The network thread may be awake now and then (reading acks, a keepalive);
        # then it sends the result. Most go from the caller's thread.
        mine = threads.count(threading.current_thread().name)
        assert mine >= 30, threads
    finally:
        pub.stop()


def test_results_from_several_threads_and_the_network_thread_arrive_whole_once_each(
        broker: Mosquitto) -> None:
    # A small window: the network thread sends what the callers' threads could not,
    # while they keep sending; paho's packets must never interleave on the socket.
    pub = publisher(broker.port, max_inflight=4, queue_size=5000)
    threads, per_thread = 4, 300
    try:
        assert pub.wait_connected(5) and pub.wait_idle(5)
        names = record_threads(pub)
        with Subscriber(broker.port, "edged/cam-1/results") as sub:
            def send(base: int) -> None:
                for i in range(per_thread):
                    pub.publish_result(result_payload(base + i))
                    if i % 50 == 0:
                        time.sleep(0.001)

            workers = [threading.Thread(target=send, args=(k * per_thread,))
                       for k in range(threads)]
            for w in workers:
                w.start()
            for w in workers:
                w.join(30)
            assert pub.wait_idle(20), pub.counters()
            got = sub.wait_count(lambda m: True, threads * per_thread, timeout=20)
        seqs = sorted(seq_of(m.payload) for m in got)  # each payload decodes whole
        assert seqs == list(range(threads * per_thread))
        c = pub.counters()
        assert (c.published, c.acked, c.dropped, c.connects) == (
            threads * per_thread, threads * per_thread, 0, 1)
        # Which callers win the lock is the scheduler's choice (on a loaded machine one
        # may send all the callers' share): a caller and the network thread, at least.
        assert "edged-mqtt" in names and len(set(names)) >= 2, set(names)
    finally:
        pub.stop()


def test_a_broker_lost_while_results_are_sent_from_the_callers_thread(
        broker: Mosquitto) -> None:
    pub = publisher(broker.port)
    errors: list[BaseException] = []
    stop = threading.Event()
    sent = [0]

    def send() -> None:
        try:
            while not stop.is_set():
                pub.publish_result(result_payload(sent[0]))
                sent[0] += 1
                time.sleep(0.002)
        except BaseException as exc:
            errors.append(exc)

    try:
        assert pub.wait_connected(5)
        with Subscriber(broker.port, "edged/cam-1/results") as sub:
            sender = threading.Thread(target=send)
            sender.start()
            time.sleep(0.3)
            broker.stop(signal.SIGKILL)
            time.sleep(0.3)
            broker.start()
            assert pub.wait_connected(10)
            time.sleep(0.3)
            stop.set()
            sender.join(5)
            assert pub.wait_idle(10), pub.counters()
            last = sent[0] - 1
            sub.wait_for(lambda m: seq_of(m.payload) == last, 10)
        assert errors == []
        c = pub.counters()
        assert c.connects == 2 and c.queued == 0 and c.inflight == 0
    finally:
        stop.set()
        pub.stop()


def test_the_figures_published_right_before_a_clean_stop_reach_the_broker(
        broker: Mosquitto) -> None:
    # The daemon's last act: its final figures, then stop(). They must go out before
    # offline, whatever the network thread was doing when stop() came.
    for run in range(5):
        pub = publisher(broker.port, device_id=f"cam-{run}")
        with Subscriber(broker.port, f"edged/cam-{run}/stats") as sub:
            assert pub.wait_connected(5)
            for seq in range(20):
                pub.publish_result(result_payload(seq))
            pub.publish_stats({"final": run})
            pub.stop()
            got = sub.wait_for(lambda m: b'"final"' in m.payload, 5)
        assert orjson.loads(got.payload)["final"] == run


def test_a_failure_sending_from_the_callers_thread_turns_that_off_with_one_line(
        broker: Mosquitto, caplog: pytest.LogCaptureFixture) -> None:
    # A topic paho refuses (a wildcard: config validation keeps them out) makes paho's
    # publish raise on the caller's thread: one line, and the network thread sends
    # everything from then on; later results arrive.
    pub = publisher(broker.port)
    try:
        assert pub.wait_connected(5) and pub.wait_idle(5)
        threads = record_threads(pub)
        with caplog.at_level(logging.ERROR, logger="edged.publish"), \
                Subscriber(broker.port, "edged/cam-1/results") as sub:
            pub.publish_result(result_payload(0), "edged/cam-1/+/results")
            for seq in range(1, 6):
                pub.publish_result(result_payload(seq))
                time.sleep(0.005)
            got = sub.wait_count(lambda m: True, 5)
        assert [seq_of(m.payload) for m in got] == [1, 2, 3, 4, 5]
        said = [r.getMessage() for r in caplog.records if "pipeline's thread" in r.getMessage()]
        assert len(said) == 1 and said[0].startswith(
            "MQTT: sending from the pipeline's thread failed ("), said
        assert said[0].endswith("the network thread sends everything from now on")
        assert threads[1:] == ["edged-mqtt"] * 5, threads
        assert pub.network_alive()
    finally:
        pub.stop()


def _switches(thread: threading.Thread) -> int:
    status = Path(f"/proc/self/task/{thread.native_id}/status").read_text()
    return sum(int(line.split()[1]) for line in status.splitlines()
               if "ctxt_switches:" in line)  # voluntary and not


def test_at_a_few_results_a_second_the_network_thread_wakes_about_once_a_result(
        broker: Mosquitto) -> None:
    # A Pi's CPU model runs at a few frames a second: reading acks every 20 ms while
    # results are being sent would wake the network thread ten times a result.
    pub = publisher(broker.port)
    try:
        assert pub.wait_connected(5) and pub.wait_idle(5)
        thread = pub._thread
        assert thread is not None
        before = _switches(thread)
        for seq in range(10):
            pub.publish_result(result_payload(seq))
            time.sleep(0.2)
        woke = _switches(thread) - before
        assert pub.wait_idle(5) and pub.counters().acked == 10
        assert woke <= 30, woke  # ~100 at one look every 20 ms
    finally:
        pub.stop()

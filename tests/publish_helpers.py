"""A Publisher in a child process, for tests that kill it for real.

`python tests/publish_helpers.py PORT DEVICE_ID` connects, prints "connected"
once the broker has accepted it, then publishes a result every 50 ms until
it is killed.
"""

from __future__ import annotations

import sys
import time

from edged.mqtt.publisher import Publisher, PublisherSettings


def main() -> int:
    port, device = int(sys.argv[1]), sys.argv[2]
    pub = Publisher(PublisherSettings(device_id=device, port=port, keepalive_s=5,
                                      backoff_min_s=0.1, backoff_max_s=0.5))
    pub.start()
    if not pub.wait_connected(10):
        print(f"not connected: {pub.counters().last_error}", flush=True)
        return 1
    print("connected", flush=True)
    seq = 0
    while True:
        pub.publish_result(b'{"seq":%d}' % seq)
        seq += 1
        time.sleep(0.05)


if __name__ == "__main__":
    sys.exit(main())

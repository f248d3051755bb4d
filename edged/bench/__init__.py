"""`edged bench`: throughput, latency and memory against a baseline in the same run."""

"""Minimum intervals for sensors meant to tick on every wake of Dagster's sensor daemon.

The daemon wakes every 5 s (dagster._daemon.sensor.MIN_INTERVAL_LOOP_TIME) and skips a
sensor whose minimum interval has not quite passed since its last tick. With a minimum of
exactly 5 s a wake a few milliseconds early skips the tick, and such a sensor ticks every
10 s (bench/latency.py: the pending sensor's first and second looks came up to 10 s late).
Just under the wake interval, it ticks on every wake: every 5 s."""

DAEMON_WAKE_S = 5
EVERY_WAKE_S = DAEMON_WAKE_S - 1

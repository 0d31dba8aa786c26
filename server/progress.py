"""Progress bars as log lines: tqdm's meter (count, percent, elapsed, ETA, rate) written
through Flower's logger at most every few seconds.

The ServerApp's stdout and stderr are captured by Flower and uploaded as text, so a
carriage-return bar would arrive as a smear of fragments; one complete line per update reads
well in `flwr run --stream`, in a deployment's log files and in CI logs alike.
"""

from __future__ import annotations

import time
from logging import INFO

from flwr.common.logger import log
from tqdm import tqdm


class ProgressLine:
    """``update(done)`` logs ``<label>  38%|###   | 3/8 [00:04<00:07, 0.70 device/s]`` at
    most every ``every_seconds`` (and always at the end)."""

    def __init__(self, label: str, total: int, unit: str = "item", every_seconds: float = 5.0
                 ) -> None:
        self.label, self.total, self.unit = label, int(total), unit
        self.every_seconds = every_seconds
        self.started = time.monotonic()
        self._last_logged = -float("inf")
        self.done = 0

    def line(self, done: int, note: str = "") -> str:
        meter = tqdm.format_meter(done, self.total, time.monotonic() - self.started,
                                  ncols=72, ascii=True, unit=f" {self.unit}")
        meter = meter.replace("s/ ", " s/")  # the slow-rate form: "19.5 s/device"
        return f"{self.label} {meter}" + (f" {note}" if note else "")

    def update(self, done: int, note: str = "") -> None:
        """Record ``done`` items; log a line when due. ``note`` is appended (e.g. a loss)."""
        self.done = done
        now = time.monotonic()
        if done >= self.total or now - self._last_logged >= self.every_seconds:
            self._last_logged = now
            log(INFO, "%s", self.line(done, note))

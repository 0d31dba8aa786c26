"""Peak memory of a block of device work, as the kernel counts it (Linux).

The resident-set high-water mark (``VmHWM``) covers everything a fit allocates — numpy, torch's
CPU allocator, tokenizers — which Python-level tracers miss. Writing ``5`` to
``/proc/self/clear_refs`` resets the mark to the current resident size (Linux >= 4.0), so the
peak of a block is ``VmHWM`` at its end minus the resident size at its start. Virtual devices
run one at a time per process, so the figure is the device's own. Where the files are missing
or not writable the measurement is unavailable and reported as such (``None``), never guessed.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_warned = False


def _status_bytes(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # reported in kB
    except OSError:
        return None
    return None


class PeakMemory:
    """``with PeakMemory() as peak: ...`` then ``peak.bytes_`` (None if unmeasurable)."""

    def __init__(self) -> None:
        self.bytes_: int | None = None
        self._start: int | None = None

    def __enter__(self) -> PeakMemory:
        global _warned
        try:
            _CLEAR_REFS.write_text("5")
            self._start = _status_bytes("VmRSS")
        except OSError:
            if not _warned:
                log.warning("peak memory is not measured here: %s is not writable",
                            _CLEAR_REFS)
                _warned = True
            self._start = None
        return self

    def __exit__(self, *exc) -> None:
        peak = _status_bytes("VmHWM") if self._start is not None else None
        self.bytes_ = None if peak is None else max(peak - self._start, 0)

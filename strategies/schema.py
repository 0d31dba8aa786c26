"""One metric schema: every name a device may send upstream, a result row may hold and a report
may show, derived from the registered components instead of hand-kept lists.

A row's metrics are: the task's quality metrics (``Task.metric_spec``), the cost fields of
``CostReport``, the extras a strategy declares (``LocalStrategy.extra_metrics``) and the
device-level fields below. The uplink guard's whitelist, the server's reply checks and the
report's columns all come from here.
"""

from __future__ import annotations

from strategies.base import CostReport
from strategies.registry import extra_metrics
from tasks.registry import all_tasks

DEVICE_METRICS: tuple[str, ...] = ("user-index", "downlink-bytes", "uplink-bytes",
                                   "state-bytes", "has-release", "failed", "error-type")
"""Per reply or per track, added by the device and the guard (not by a strategy)."""

DEVICE_ERROR_TYPES: tuple[str, ...] = (
    "other", "InjectedFault", "CorruptStateError", "ReleaseIntegrityError",
    "FileNotFoundError", "KeyError", "ValueError", "RuntimeError", "MemoryError", "OSError",
    "TimeoutError", "DataError",
)
"""What a device hosted beside others may say of its failure: an index into this public list
(a number, like every metric; an exception's text may quote private data and never leaves)."""


def error_type_code(error: BaseException) -> int:
    """The index of ``error``'s type, or of its nearest listed base class ("other": 0)."""
    for kind in type(error).__mro__:
        if kind.__name__ in DEVICE_ERROR_TYPES:
            return DEVICE_ERROR_TYPES.index(kind.__name__)
    return 0


def error_type_name(code: float) -> str:
    """The error type a device reported (``error_type_code``'s inverse)."""
    index = int(code)
    return DEVICE_ERROR_TYPES[index] if 0 <= index < len(DEVICE_ERROR_TYPES) else "other"


def cost_metrics() -> tuple[str, ...]:
    """Cost columns, in report order."""
    return (*CostReport.metric_names(), "state-bytes")


def task_metrics() -> tuple[str, ...]:
    """Every registered task's metric names (sorted, unique)."""
    return tuple(sorted({name for task in all_tasks() for name in task.metric_spec.names}))


def allowed_metrics() -> frozenset[str]:
    """The uplink whitelist: nothing else may leave a device."""
    return frozenset({*task_metrics(), *CostReport.metric_names(), *extra_metrics(),
                      *DEVICE_METRICS})

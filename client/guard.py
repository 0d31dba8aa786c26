"""The uplink guard: a ClientApp mod that lets only metrics leave the device.

Privacy is a product feature. A reply may hold ``MetricRecord``s with whitelisted, finite,
scalar values under ``<track>/<metric>`` or ``<metric>`` keys. Anything else — an
``ArrayRecord`` (weights, embeddings), a ``ConfigRecord`` (text), a list (logits), an unknown
key — is refused: the device sends an error reply instead of the content. A handler that
raises gets an error reply naming only the exception type: exception texts may quote private
data, so the traceback stays in the device's log. The guard also counts the uplink bytes of
what it lets through.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from logging import ERROR, WARNING

from flwr.app import Context, Error, Message, MetricRecord, RecordDict
from flwr.common.constant import ErrorCode
from flwr.common.logger import log

ALLOWED_METRICS: frozenset[str] = frozenset({
    "auc", "mrr", "ndcg5", "ndcg10", "impressions", "fit-seconds", "forward-flops",
    "backward-flops", "solver-flops", "backbone-forwards", "trainable-params", "state-bytes",
    "examples-used", "strong-queries", "clusters", "fit-error", "peak-memory-bytes",
    "downlink-bytes", "uplink-bytes", "user-index", "seconds", "cache-bytes", "extra-tokens",
    "accuracy", "f1", "macro-f1", "lambda",
})
_TRACK = re.compile(r"^[a-z0-9][a-z0-9-]*$")
UPLINK_RECORD = "uplink"


class UplinkViolation(Exception):
    """A reply tried to carry something other than whitelisted metrics."""


def check_reply(content: RecordDict, allowed: frozenset[str] = ALLOWED_METRICS) -> int:
    """Raise ``UplinkViolation`` unless ``content`` is metrics only; return its size in bytes.

    The size is Flower's own count of the records' payload (``count_bytes``)."""
    size = 0
    for name, record in content.items():
        if not isinstance(record, MetricRecord):
            raise UplinkViolation(
                f"record {name!r} is a {type(record).__name__}; replies carry MetricRecords only")
        for key, value in record.items():
            track, sep, metric = key.rpartition("/")
            if metric not in allowed or (sep and not _TRACK.match(track)):
                raise UplinkViolation(f"record {name!r}: key {key!r} is not a whitelisted metric")
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise UplinkViolation(
                    f"record {name!r}: {key!r} is a {type(value).__name__}, not a scalar")
            if not math.isfinite(value):
                raise UplinkViolation(f"record {name!r}: {key!r} is not finite")
        size += record.count_bytes()
    return size


def make_uplink_guard(allowed: frozenset[str] = ALLOWED_METRICS) -> Callable:
    """Build the mod for a given whitelist."""

    def uplink_guard(message: Message, context: Context, call_next: Callable) -> Message:
        try:
            reply = call_next(message, context)
        except Exception as err:  # an exception text may quote private data: keep it local
            log(ERROR, "device handler failed (details stay on the device)", exc_info=True)
            return Message(
                Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
                      reason=f"{type(err).__name__} on the device; details are in its local log"),
                reply_to=message,
            )
        if reply.has_error():
            return reply
        try:
            size = check_reply(reply.content, allowed)
        except UplinkViolation as violation:
            log(WARNING, "uplink guard blocked a reply: %s", violation)
            return Message(
                Error(code=ErrorCode.MOD_FAILED_PRECONDITION,
                      reason=f"uplink guard blocked the reply: {violation}"),
                reply_to=message,
            )
        reply.content[UPLINK_RECORD] = MetricRecord({"uplink-bytes": size})
        return reply

    return uplink_guard


uplink_guard = make_uplink_guard()

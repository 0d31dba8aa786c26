"""The uplink guard: a ClientApp mod that lets only metrics leave the device.

Privacy is a product feature. A reply may hold ``MetricRecord``s with whitelisted, finite,
scalar values under ``<track>/<metric>`` or ``<metric>`` keys. Anything else — an
``ArrayRecord`` (weights, embeddings), a ``ConfigRecord`` (text), a list (logits), an unknown
key, NaN/inf — is refused: the device sends an error reply instead of the content, and the
error's reason names the record and key, never a value. A handler that raises gets an error
reply naming only the exception type: exception texts may quote private data, so the traceback
stays in the device's log.

The guard also measures what it lets through: the uplink size is the byte length of the
reply content as Flower 1.41 puts it on the wire (per device record when a simulated node runs
several devices) — the deflated ``RecordDict`` plus each
distinct deflated record (``InflatableObject.deflate``, headers included), without the
message metadata and the ``uplink`` record the guard itself adds.
"""

from __future__ import annotations

import math
from logging import ERROR, WARNING

from flwr.app import Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp.typing import ClientAppCallable, Mod
from flwr.common.constant import ErrorCode
from flwr.common.logger import log
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

from strategies.registry import TRACK_NAME
from strategies.schema import allowed_metrics

ALLOWED_METRICS: frozenset[str] = allowed_metrics()
"""Derived from the one metric schema (strategies/schema.py)."""
_TRACK = TRACK_NAME
_NAME_CAP = 40
UPLINK_RECORD = "uplink"


class UplinkViolation(Exception):
    """A reply tried to carry something other than whitelisted metrics."""


def _name(text: str) -> str:
    """A record name or key for a log line or error reason, capped so it cannot carry much."""
    return repr(text if len(text) <= _NAME_CAP else text[:_NAME_CAP] + "...")


def check_reply(content: RecordDict, allowed: frozenset[str] = ALLOWED_METRICS) -> int:
    """Raise ``UplinkViolation`` unless ``content`` is metrics only; return its size in bytes.

    Record names must match ``[a-z0-9][a-z0-9-]*`` (like tracks: a name is a channel too).
    The violation names the record and key, never a value. The size is the serialized size of
    ``content`` on Flower's wire (see ``uplink_bytes``)."""
    for name, record in content.items():
        if not isinstance(record, MetricRecord):
            raise UplinkViolation(f"record {_name(name)} is a {type(record).__name__}; "
                                  "replies carry MetricRecords only")
        if not _TRACK.match(name):
            raise UplinkViolation(f"record name {_name(name)} is not of the form [a-z0-9-]+")
        for key, value in record.items():
            track, sep, metric = key.rpartition("/")
            if metric not in allowed or (sep and not _TRACK.match(track)):
                raise UplinkViolation(
                    f"record {_name(name)}: key {_name(key)} is not a whitelisted metric")
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise UplinkViolation(f"record {_name(name)}: {_name(key)} is a "
                                      f"{type(value).__name__}, not a scalar")
            if not math.isfinite(value):
                raise UplinkViolation(f"record {_name(name)}: {_name(key)} is not finite")
    return uplink_bytes(content)


def uplink_bytes(content: RecordDict) -> int:
    """Serialized size of ``content``: the deflated RecordDict and its distinct records."""
    return sum(len(obj.deflate()) for obj in get_all_nested_objects(content).values())


def _uplink_per_record(content: RecordDict, size: int) -> dict[str, int]:
    """``uplink-bytes`` of the reply; for a node that runs several devices (one record each),
    ``<record>/uplink-bytes`` per device: what that device's record alone would send."""
    if len(content) <= 1:
        return {"uplink-bytes": size}
    return {f"{name}/uplink-bytes": uplink_bytes(RecordDict({name: record}))
            for name, record in content.items()}


def make_uplink_guard(allowed: frozenset[str] = ALLOWED_METRICS) -> Mod:
    """Build the mod (``ClientApp(mods=[...])``) for a given whitelist."""

    def uplink_guard(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
        """Run the handler; forward its reply only if it is metrics only, else an error."""
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
        except Exception as err:  # anything the guard cannot vouch for stays on the device
            violation = err if isinstance(err, UplinkViolation) else UplinkViolation(
                f"the reply could not be checked ({type(err).__name__})")
            log(WARNING, "uplink guard blocked a reply: %s", violation)
            return Message(
                Error(code=ErrorCode.MOD_FAILED_PRECONDITION,
                      reason=f"uplink guard blocked the reply: {violation}"),
                reply_to=message,
            )
        reply.content[UPLINK_RECORD] = MetricRecord(_uplink_per_record(reply.content, size))
        return reply

    return uplink_guard


uplink_guard = make_uplink_guard()

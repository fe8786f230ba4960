"""Typed rejection of frames: a closed set of reasons and the one exception decoding raises."""

from __future__ import annotations

from enum import Enum

from legion.kernel.errors import LegionError


class Reason(str, Enum):  # noqa: UP042 - StrEnum would change str() of a reason
    """Why a frame was rejected. Closed set: counters and dashboards key on these values."""

    FRAME_TOO_LARGE = "frame_too_large"
    BAD_MSGPACK = "bad_msgpack"
    UNSUPPORTED_VERSION = "unsupported_version"
    UNKNOWN_KIND = "unknown_kind"
    MISSING_FIELD = "missing_field"
    MISTYPED_FIELD = "mistyped_field"
    BAD_NODE = "bad_node"
    TOO_MANY_POINTS = "too_many_points"
    TOO_MANY_SERIES = "too_many_series"
    NAME_TOO_LONG = "name_too_long"
    BAD_NAME = "bad_name"
    TOO_MANY_LABELS = "too_many_labels"
    LABEL_TOO_LONG = "label_too_long"
    BAD_LABEL = "bad_label"
    LENGTH_MISMATCH = "length_mismatch"
    INDEX_OUT_OF_RANGE = "index_out_of_range"
    NON_FINITE_VALUE = "non_finite_value"
    TIMESTAMP_OUT_OF_RANGE = "timestamp_out_of_range"
    # Decided by the aggregator after decoding, from the sender's Curve identity:
    NODE_MISMATCH = "node_mismatch"
    UNKNOWN_KEY = "unknown_key"
    SERIES_LIMIT = "series_limit"  # would create series beyond aggregator.max_series_per_*


class WireError(LegionError):
    """A frame was rejected; `reason` is one of `Reason`, `detail` is for humans and logs."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        # (kind, node, epoch, seq) when the envelope header was valid and only the body was not,
        # so the receiver can tell that sender to stop resending a batch it will never accept.
        self.header: tuple[str, str, int, int] | None = None
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)

"""Wire schema v1: envelope, bodies, limits, name grammar, the msgpack codec, typed rejections."""

from legion.proto.codec import Codec, MsgpackCodec, decode, encode, encode_samples
from legion.proto.errors import Reason, WireError
from legion.proto.limits import SCHEMA_VERSION
from legion.proto.messages import (
    ACK_CHECKPOINTED,
    ACK_COMMITTED,
    ACK_REJECTED,
    KIND_ACK,
    KIND_METRICS,
    Ack,
    Envelope,
    Labels,
    MetricsBatch,
    Sample,
    canonical_labels,
)

__all__ = [
    "ACK_CHECKPOINTED", "ACK_COMMITTED", "ACK_REJECTED", "KIND_ACK", "KIND_METRICS",
    "SCHEMA_VERSION", "Ack", "Codec", "Envelope", "Labels", "MetricsBatch", "MsgpackCodec",
    "Reason", "Sample", "WireError", "canonical_labels", "decode", "encode", "encode_samples",
]

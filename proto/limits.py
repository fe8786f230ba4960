"""Hard limits of wire schema v1. Anything beyond them is rejected with a typed reason."""

from __future__ import annotations

SCHEMA_VERSION = 1

MAX_FRAME_BYTES = 8 * 1024 * 1024  # default ZMQ_MAXMSGSIZE too; config may lower it
MAX_POINTS_PER_BATCH = 100_000
MAX_SERIES_PER_BATCH = 20_000  # distinct (name, label set) pairs referenced by one batch
MAX_NAME_LEN = 200
MAX_NODE_LEN = 128
MAX_LABELS = 16
MAX_LABEL_KEY_LEN = 64
MAX_LABEL_VALUE_LEN = 256
MAX_EPOCH = 2**63 - 1
MAX_SEQ = 2**63 - 1

# Timestamp policy (milliseconds since the Unix epoch, UTC): an agent's spool can hold days of
# backlog, so the past window is generous; the future window only absorbs clock skew.
MAX_PAST_MS = 30 * 24 * 3600 * 1000
MAX_FUTURE_MS = 10 * 60 * 1000

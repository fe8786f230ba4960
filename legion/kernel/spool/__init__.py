"""The durable spool: a bounded on-disk queue of encoded batches that survives `kill -9`.

`spool` (the queue), `records` (the on-disk record and segment format), `index` (where each
pending record is), `release_log` (released seq ranges, on disk), `ledger` (lifetime counters and
dropped seq ranges). Used by the node agent (its last copy until the aggregator
checkpoints) and by the aggregator's remote-write sink queue.
"""

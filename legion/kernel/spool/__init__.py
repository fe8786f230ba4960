"""The durable spool: a bounded on-disk queue of encoded batches that survives `kill -9`.

`spool` (the queue), `records` (the on-disk record and segment format), `ledger` (released seq
ranges and lifetime counters). Used by the node agent (its last copy until the aggregator
checkpoints) and by the aggregator's remote-write sink queue.
"""

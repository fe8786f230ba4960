"""The shared kernel: what every component may use, importing no component itself.

`errors` (the one exception tree), `curve` (CurveZMQ key files and socket set-up), `config` (the
machinery that loads a config document and builds each component's sections from it) and `spool`
(the durable on-disk queue of encoded batches, used by the node agent and the aggregator's sinks).
"""

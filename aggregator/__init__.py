"""The aggregator: ingest from agents on the Curve allowlist (`allowlist.py`, `ingest.py`) into
DuckDB (`store/`), the gateway's API, stream and dashboard (`gateway/`), the analytics bridge,
alerting (`alerts/`) and sinks (`sinks/`), wired together by `service.py`."""

"""DuckDB storage: exactly-once batches, series and raw points, rollup tiers, retention, archive.

Public surface: `Store`, `IncomingBatch`, `WriteResult`, `export_parquet`, `SCHEMA_VERSION`.
"""

from legion.aggregator.store.export import export_parquet
from legion.aggregator.store.schema import SCHEMA_VERSION
from legion.aggregator.store.store import Store
from legion.aggregator.store.types import IncomingBatch, WriteResult

__all__ = ["SCHEMA_VERSION", "IncomingBatch", "Store", "WriteResult", "export_parquet"]

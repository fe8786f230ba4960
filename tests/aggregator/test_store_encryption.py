"""Encryption at rest: nothing readable in the database, WAL or archive; wrong key refused.

The full test needs a DuckDB that can write encrypted files (the `encryption` extra: duckdb 1.5.5
+ duckdb-extension-httpfs). On a DuckDB without it, the store must refuse to start with a clear
error instead of silently writing plaintext.
"""

from __future__ import annotations

import struct

import duckdb
import pytest

from legion.aggregator.config import StorageConfig
from legion.aggregator.store import IncomingBatch, Store
from legion.aggregator.store.schema import load_crypto
from legion.kernel.errors import StoreError
from legion.proto import MetricsBatch, Sample, canonical_labels

T0 = 1_700_006_400_000
CANARY = "legion_canary_secret_metric_bytes"
VALUE = 987654.321
KEY = "correct horse battery staple 42"


def _crypto_available() -> bool:
    con = duckdb.connect()
    try:
        load_crypto(con)
        return True
    except StoreError:
        return False
    finally:
        con.close()


def _batch(seq: int) -> IncomingBatch:
    samples = [Sample(CANARY, canonical_labels({"disk": "canary_label_value"}), VALUE + i, T0 + i)
               for i in range(50)]
    return IncomingBatch("canary-node", 1, seq, MetricsBatch.from_samples(samples), T0)


def _cfg(base_dir, **kw) -> StorageConfig:
    base = dict(encryption_enabled=True, encryption_key_env="LEGION_TEST_STORAGE_KEY",
                encryption_key_path="missing.key", archive_enabled=True, archive_dir="arch",
                raw_retention_hours=1, maintenance_budget_ms=30_000)
    base.update(kw)
    return StorageConfig(**base).resolved(base_dir)  # as the service hands it over


def _leaks(data: bytes) -> list[str]:
    found = [s for s in (CANARY, "canary-node", "canary_label_value") if s.encode() in data]
    found += [f"value {VALUE + i}" for i in range(50) if struct.pack("<d", VALUE + i) in data]
    return found


@pytest.mark.skipif(_crypto_available(), reason="this DuckDB can encrypt: full test runs")
def test_encryption_refused_without_crypto_module(tmp_path, monkeypatch):
    monkeypatch.setenv("LEGION_TEST_STORAGE_KEY", KEY)
    with pytest.raises(StoreError, match="encryption_enabled needs DuckDB's httpfs"):
        Store(tmp_path / "e.duckdb", _cfg(tmp_path))
    assert not (tmp_path / "e.duckdb").exists()


def test_missing_or_short_key_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("LEGION_TEST_STORAGE_KEY", raising=False)
    with pytest.raises(StoreError, match="encryption_key_path"):
        Store(tmp_path / "e.duckdb", _cfg(tmp_path))
    monkeypatch.setenv("LEGION_TEST_STORAGE_KEY", "short")
    with pytest.raises(StoreError, match="at least 16"):
        Store(tmp_path / "e.duckdb", _cfg(tmp_path))


@pytest.mark.skipif(not _crypto_available(), reason="needs the encryption extra (httpfs)")
def test_nothing_readable_at_rest_and_wrong_key_refused(tmp_path, monkeypatch):
    # control: without encryption the canary is plainly in the bytes
    plain = Store(tmp_path / "plain.duckdb")
    plain.write([_batch(1)])
    plain.close()
    assert CANARY in _leaks((tmp_path / "plain.duckdb").read_bytes())

    monkeypatch.setenv("LEGION_TEST_STORAGE_KEY", KEY)
    path = tmp_path / "enc.duckdb"
    store = Store(path, _cfg(tmp_path), clock_ms=lambda: T0 + 86_400_000)
    store.write([_batch(1)])
    wal = path.with_name(path.name + ".wal")
    assert wal.exists() and _leaks(wal.read_bytes()) == []
    assert store.query(CANARY)[0]["value"] == VALUE  # queries unchanged
    report = store.maintain()  # archives the raw points, then deletes them
    assert report["archived_points"] == 50
    store.close()
    archives = list((tmp_path / "arch").rglob("*.parquet"))
    assert archives
    for f in [path, *archives]:
        assert _leaks(f.read_bytes()) == [], f

    store = Store(path, _cfg(tmp_path), clock_ms=lambda: T0 + 86_400_000)
    try:
        (row,) = store.query(CANARY, step_ms=86_400_000, agg="count")
        assert row["value"] == 50 and row["labels"] == {"disk": "canary_label_value"}
    finally:
        store.close()
    monkeypatch.setenv("LEGION_TEST_STORAGE_KEY", "a wrong key that is long enough")
    with pytest.raises(StoreError, match="wrong encryption key"):
        Store(path, _cfg(tmp_path))
    with pytest.raises(StoreError, match="is encrypted"):
        Store(path)

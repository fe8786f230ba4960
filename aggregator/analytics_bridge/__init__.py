"""The aggregator's side of analytics: the one place the aggregator and the worker pool meet.

    bridge = AnalyticsBridge(ctx, config, keypair, store, submit)   # a thread: sockets and loop
    bridge.start(); bridge.bands.band_for(node, metric, labels)     # learned normal bands

Modules, one idea each: `bridge` (the PUSH/PULL sockets, the loop, results -> series of node
`analytics`), `watched` (which series are analysed and the store queries that build their jobs),
`new_points` (`NewPoints`: what each pass reads, only what is new), `bucketed`
(`BucketedDetect`: jobs on the maxima of whole `analytics.detect_step_secs` buckets),
`jobs` (`JobBook`: job bookkeeping, detector states, re-dispatch), `band_book` (`BandBook` and
`band_from_store`: learned normal bands). `legion.analytics` holds only the worker-side
algorithms and never imports this package.
"""

from legion.aggregator.analytics_bridge.band_book import BandBook, BandEntry, band_from_store
from legion.aggregator.analytics_bridge.bridge import (
    WORKER_DOMAIN,
    AnalyticsBridge,
    worker_registry,
)
from legion.aggregator.analytics_bridge.jobs import JobBook

__all__ = ["WORKER_DOMAIN", "AnalyticsBridge", "BandBook", "BandEntry", "JobBook",
           "band_from_store", "worker_registry"]

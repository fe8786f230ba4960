"""Rows on one host at 1 s: the node agent beside node_exporter and collectd, and the receiving
side at one agent (the aggregator beside Prometheus scraping node_exporter every second).

All five processes run at once and are measured over the same windows (CPU from schedstat, RSS
sampled every second), so whatever else the shared machine does falls on all of them alike.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # bench/

from agent_overhead import Sampler, series_of_node, start_agent, stop_proc  # noqa: E402
from peers import Peer, http_get, start_collectd, start_node_exporter, start_prometheus  # noqa: E402,I001


def exporter_series(url: str) -> int:
    """Samples in one node_exporter scrape."""
    return sum(1 for line in http_get(url + "/metrics").decode().splitlines()
               if line and not line.startswith("#"))


def collectd_values(csv_dir: Path) -> int:
    """Values collectd writes per interval: the value columns of every CSV file it keeps."""
    n = 0
    for f in csv_dir.rglob("*-20*"):
        with f.open() as fh:
            n += max(0, len(fh.readline().strip().split(",")) - 1)
    return n


class HostRows:
    """Starts the five processes once; `round(window_s)` measures one window."""

    def __init__(self, work: Path, warmup_s: float) -> None:
        self._peers: list[Peer] = []
        self._procs = []
        work.mkdir(parents=True, exist_ok=True)
        try:
            self.cfg, self._procs = start_agent(work / "legion", 1.0)
            ne, self.ne_url = start_node_exporter(work)
            self._peers.append(ne)
            prom, _ = start_prometheus(work, self.ne_url.split("//", 1)[1], 1.0)
            self._peers.append(prom)
            cd, self.csv_dir = start_collectd(work, 1.0)
            self._peers.append(cd)
        except BaseException:
            self.close()
            raise
        aggregator, agent = self._procs
        self.pids = {"agent": agent.pid, "aggregator": aggregator.pid, "node_exporter": ne.pid,
                     "prometheus": prom.pid, "collectd": cd.pid}
        time.sleep(warmup_s)

    def round(self, window_s: float) -> dict[str, float]:
        """CPU % of one core and mean RSS of each process over one window, plus the series
        each one handles per second and the derived per-sample figures."""
        samplers = {k: Sampler(pid) for k, pid in self.pids.items()}
        for s in samplers.values():
            s.begin()
        end = time.monotonic() + window_s
        while time.monotonic() < end:
            for s in samplers.values():
                s.sample()
            time.sleep(min(1.0, max(0.0, end - time.monotonic())))
        out: dict[str, float] = {}
        for k, s in samplers.items():
            s.end()
            r = s.result()
            out[f"{k}_cpu_percent"] = r["cpu_percent"]
            out[f"{k}_rss_mib"] = r["rss_mib_mean"]
        out["agent_series"] = float(series_of_node(self.cfg)["total"])
        out["node_exporter_series"] = float(exporter_series(self.ne_url))
        out["collectd_values"] = float(collectd_values(self.csv_dir))
        for k, n in (("agent", "agent_series"), ("node_exporter", "node_exporter_series"),
                     ("collectd", "collectd_values")):
            # CPU seconds per 1,000 samples (one tick per second)
            out[f"{k}_cpu_ms_per_1k_samples"] = out[f"{k}_cpu_percent"] * 10 / out[n] * 1000
        out["aggregator_cpu_percent_per_1k_pts_s"] = (out["aggregator_cpu_percent"]
                                                      / (out["agent_series"] / 1000))
        out["prometheus_cpu_percent_per_1k_pts_s"] = (out["prometheus_cpu_percent"]
                                                      / (out["node_exporter_series"] / 1000))
        return out

    def close(self) -> None:
        """Stop everything this started."""
        for p in self._procs:
            stop_proc(p)
        for peer in self._peers:
            peer.stop()

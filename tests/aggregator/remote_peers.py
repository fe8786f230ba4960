"""Real remote-write receivers for the sink tests: Prometheus and VictoriaMetrics (Debian
packages), each started on a free 127.0.0.1 port with a temporary data directory. Not a test module.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tests.conftest import free_port


class Peer:
    """One receiver process; `stop()` then `start()` again keeps its data (same port, same dir)."""

    def __init__(self, kind: str, data_dir: Path, dedup: bool = True,
                 out_of_order: bool = True, web_config: str | None = None,
                 ssl_context: Any = None, auth: str | None = None) -> None:
        self.web_config = web_config  # Prometheus --web.config.file contents (TLS, basic auth)
        self.ssl_context, self.auth = ssl_context, auth  # how this helper reaches it then
        self.kind = kind
        self.dedup = dedup
        self.out_of_order = out_of_order
        self.data_dir = data_dir
        self.port = free_port()
        self.base = f"{'https' if ssl_context else 'http'}://127.0.0.1:{self.port}"
        self.p: subprocess.Popen[bytes] | None = None
        data_dir.mkdir(parents=True, exist_ok=True)

    @property
    def write_url(self) -> str:
        return self.base + "/api/v1/write"

    def argv(self) -> list[str]:
        if self.kind == "prometheus":
            cfg = self.data_dir / "prometheus.yml"
            # Agents resend batches lost on the way (e.g. before the first handshake), so samples
            # of a series can reach the store out of order: accept them within an hour
            # (README "Scale-out"); VictoriaMetrics accepts any order by itself.
            ooo = "storage:\n  tsdb:\n    out_of_order_time_window: 1h\n" \
                if self.out_of_order else ""
            cfg.write_text("global:\n  scrape_interval: 1h\nscrape_configs: []\n" + ooo)
            web = []
            if self.web_config:
                (self.data_dir / "web.yml").write_text(self.web_config)
                web = [f"--web.config.file={self.data_dir / 'web.yml'}"]
            return ["prometheus", *web, f"--config.file={cfg}",
                    "--web.enable-remote-write-receiver",
                    f"--storage.tsdb.path={self.data_dir / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"]
        # VictoriaMetrics: only the HTTP listener (graphite/influx/opentsdb are off by default);
        # no query latency offset and no result cache, so what was written is read back at once;
        # identical samples deduplicated like Prometheus does (remote write is at-least-once: a
        # request cut off by a receiver's shutdown is sent again; README "Scale-out").
        return ["victoria-metrics", f"-httpListenAddr=127.0.0.1:{self.port}",
                f"-storageDataPath={self.data_dir / 'vm'}", "-search.latencyOffset=0s",
                "-search.disableCache", "-loggerLevel=WARN"
                ] + (["-dedup.minScrapeInterval=1ms"] if self.dedup else [])

    def start(self, wait: bool = True) -> Peer:
        log = open(self.data_dir / f"{self.kind}.log", "ab")
        self.p = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        log.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        path = "/-/ready" if self.kind == "prometheus" else "/health"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.p is not None and self.p.poll() is None, \
                (self.data_dir / f"{self.kind}.log").read_text()[-2000:]
            try:
                with self._open(self.base + path, timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"{self.kind} not ready after {timeout}s")

    def _open(self, url: str, timeout: float) -> Any:
        req = urllib.request.Request(url, headers={"Authorization": self.auth} if self.auth
                                     else {})
        return urllib.request.urlopen(req, timeout=timeout, context=self.ssl_context)

    def stop(self) -> None:
        if self.p is not None and self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(30)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(10)
        self.p = None

    def api(self, path: str, **params: Any) -> Any:
        url = self.base + path + "?" + urllib.parse.urlencode(params, doseq=True)
        with self._open(url, timeout=30) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return body["data"]

    def flush(self) -> None:
        """VictoriaMetrics: make what it received searchable now (it buffers new samples for a
        few seconds; /internal/force_flush is its documented way for tests). Prometheus: no-op."""
        if self.kind == "victoria-metrics":
            with self._open(self.base + "/internal/force_flush", timeout=30) as r:
                assert r.status == 200, r.status

    def raw(self, selector: str, since_ms: int, until_ms: int
            ) -> dict[tuple[tuple[str, str], ...], list[tuple[int, float]]]:
        """Every stored raw sample of the matching series in [since, until], by label set."""
        out: dict[tuple[tuple[str, str], ...], list[tuple[int, float]]] = {}
        if self.kind == "prometheus":
            span = max(1, (until_ms - since_ms + 999) // 1000)
            data = self.api("/api/v1/query", query=f"{selector}[{span}s]",
                            time=f"{until_ms / 1000:.3f}")
            for r in data["result"]:
                key = tuple(sorted(r["metric"].items()))
                out[key] = [(round(float(t) * 1000), float(v)) for t, v in r["values"]]
            return out
        self.flush()
        url = self.base + "/api/v1/export?" + urllib.parse.urlencode(
            {"match[]": selector, "start": f"{since_ms / 1000:.3f}",
             "end": f"{until_ms / 1000:.3f}"})
        with urllib.request.urlopen(url, timeout=30) as r:
            for line in r.read().decode().splitlines():
                if line.strip():
                    row = json.loads(line)
                    key = tuple(sorted(row["metric"].items()))
                    out.setdefault(key, []).extend(zip(row["timestamps"], row["values"]))
        return {k: sorted((int(t), float(v)) for t, v in pts) for k, pts in out.items()}

"""Runs many real NodeAgents in one process (for the 200-agent test); not a test module itself.

    python -m tests.legion.fleet_harness --config F --prefix sim --first 0 --count 50 \
        --report R.json --stop-file STOP

Every `--report-after` seconds it rewrites R.json with each agent's (epoch, last seq handed out)
and keeps running (resending whatever is unacknowledged) until STOP exists.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from legion.cli.config import load_config
from legion.node_agent.agent import NodeAgent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--prefix", default="sim")
    ap.add_argument("--first", type=int, default=0)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--report", required=True)
    ap.add_argument("--stop-file", required=True)
    ap.add_argument("--report-after", type=float, default=8.0)
    ap.add_argument("--max-secs", type=float, default=200.0)
    args = ap.parse_args()
    cfg = load_config(args.config)
    agents = [NodeAgent(cfg.agent_settings(), f"{args.prefix}-{i:03d}")
              for i in range(args.first, args.first + args.count)]
    for a in agents:
        a.start()
    started = time.monotonic()
    reported = False
    try:
        while not Path(args.stop_file).exists() and time.monotonic() - started < args.max_secs:
            time.sleep(0.2)
            if not reported and time.monotonic() - started >= args.report_after:
                want = {a.node: [a.state.epoch, a.state.peek_next_seq() - 1] for a in agents}
                Path(args.report).write_text(json.dumps(want))
                reported = True
    finally:
        # together: each stop waits up to a collection interval for its loop (50 in a row: ~20 s)
        with ThreadPoolExecutor(len(agents)) as pool:
            list(pool.map(NodeAgent.stop, agents))


if __name__ == "__main__":
    main()

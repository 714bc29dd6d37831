"""The load generator bench/ingest.py runs in a process of its own when wrk is not installed: an
async httpx client keeping N connections busy with signed webhook deliveries for a fixed time.
Writes the same JSON as the wrk script's done(): counts, errors, latencies in microseconds.

    .venv/bin/python bench/_loadgen.py CONFIG.json   (written by bench/ingest.py)"""

import asyncio
import itertools
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx


def percentile(ordered: list[float], share: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(int(share * len(ordered)), len(ordered) - 1)]


async def run(config: dict[str, Any]) -> dict[str, Any]:
    deliveries = [(d["body"].encode(), d["hmac"]) for d in config["deliveries"]]
    connections = config["connections"]
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    errors = Counter[str]()
    numbers = itertools.count(1)
    async with httpx.AsyncClient(base_url=config["url"], limits=limits, timeout=30) as client:
        start = time.perf_counter()
        deadline = start + config["duration"]

        async def connection(lane: int) -> None:
            while time.perf_counter() < deadline:
                n = next(numbers)
                body, signature = deliveries[n % len(deliveries)]
                event = f"{config['prefix']}-{lane}-{n}"
                headers = {
                    "Content-Type": "application/json",
                    "X-Shopify-Topic": config["topic"],
                    "X-Shopify-Hmac-Sha256": signature,
                    "X-Shopify-Shop-Domain": config["domain"],
                    "X-Shopify-API-Version": "2026-07",
                    "X-Shopify-Webhook-Id": f"w-{event}",
                    "X-Shopify-Event-Id": event,
                    "X-Shopify-Triggered-At": "2026-11-23T10:00:00.000000Z",
                }
                sent = time.perf_counter()
                try:
                    answer = await client.post(config["path"], content=body, headers=headers)
                except httpx.TimeoutException:
                    errors["timeout"] += 1
                    continue
                except httpx.HTTPError:
                    errors["read"] += 1
                    continue
                latencies.append(time.perf_counter() - sent)
                statuses[answer.status_code] += 1

        await asyncio.gather(*(connection(lane) for lane in range(connections)))
        elapsed = time.perf_counter() - start
    ordered = sorted(latencies)
    micro = [value * 1e6 for value in ordered]
    return {
        "duration_us": int(elapsed * 1e6),
        "requests": len(latencies),
        "errors": {
            "connect": 0,
            "read": errors["read"],
            "write": 0,
            "timeout": errors["timeout"],
            "status": sum(count for status, count in statuses.items() if not 200 <= status < 400),
        },
        "latency_us": {
            "min": micro[0] if micro else 0,
            "mean": sum(micro) / len(micro) if micro else 0,
            "max": micro[-1] if micro else 0,
            "p50": percentile(micro, 0.50),
            "p90": percentile(micro, 0.90),
            "p99": percentile(micro, 0.99),
        },
    }


if __name__ == "__main__":
    settings = json.loads(Path(sys.argv[1]).read_text())
    outcome = asyncio.run(run(settings))
    Path(settings["out"]).write_text(json.dumps(outcome))

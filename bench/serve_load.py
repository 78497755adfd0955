"""Load on `charnn serve`: N concurrent clients, each sending one request after another.

    charnn serve CHECKPOINT --no-access-log &        # in another terminal, or in the background
    python bench/serve_load.py [--url http://127.0.0.1:8080] [--clients 1,8,32] [--seconds 20]

For each number of clients it runs the clients together for --seconds, each posting
/v1/sample requests of --length characters (a fresh seed each) as soon as its last one is
answered, and prints the requests answered, the total generated characters per second over all
clients, and the latency percentiles of a request. Last, the chars/s of the largest client count
over that of one client (one request at a time), measured in the same run: dynamic batching
should make it 3 or more at 32 clients.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import httpx
import numpy as np


async def one_client(
    client: httpx.AsyncClient, url: str, length: int, until: float, seed: int
) -> tuple[int, list[float]]:
    chars, latencies = 0, []
    while time.perf_counter() < until:
        body = {"prime": "The ", "length": length, "seed": seed}
        started = time.perf_counter()
        answer = await client.post(f"{url}/v1/sample", json=body)
        answer.raise_for_status()
        latencies.append(time.perf_counter() - started)
        chars += sum(len(s["text"]) for s in answer.json()["samples"])
        seed += 1
    return chars, latencies


async def run(url: str, clients: int, length: int, seconds: float) -> dict[str, float]:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=300) as client:
        started = time.perf_counter()
        until = started + seconds
        results = await asyncio.gather(
            *(one_client(client, url, length, until, 1000 * k) for k in range(clients))
        )
        elapsed = time.perf_counter() - started
    latencies = np.array([t for _, ts in results for t in ts])
    return {
        "clients": clients,
        "requests": len(latencies),
        "chars_per_sec": sum(c for c, _ in results) / elapsed,
        **{f"p{q}": float(np.percentile(latencies, q)) for q in (50, 90, 99)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--clients", default="1,8,32", help="client counts, comma-separated")
    parser.add_argument("--length", type=int, default=200, help="characters per request")
    parser.add_argument("--seconds", type=float, default=20, help="per client count")
    args = parser.parse_args()
    model = httpx.get(f"{args.url}/v1/model", timeout=30).json()
    print(
        f"# {model['cell']} {model['layers']}x{model['hidden_size']}, vocabulary "
        f"{model['vocab_size']}; {args.length} characters per request, {args.seconds:g} s each"
    )
    print(
        f"{'clients':>7} {'requests':>8} {'chars/s':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}"
    )
    rows = []
    for clients in [int(c) for c in args.clients.split(",")]:
        row = asyncio.run(run(args.url, clients, args.length, args.seconds))
        rows.append(row)
        print(
            f"{clients:>7} {row['requests']:>8} {row['chars_per_sec']:>9.0f} "
            f"{1000 * row['p50']:>8.1f} {1000 * row['p90']:>8.1f} {1000 * row['p99']:>8.1f}"
        )
    if len(rows) > 1 and rows[0]["clients"] == 1:
        ratio = rows[-1]["chars_per_sec"] / rows[0]["chars_per_sec"]
        print(f"chars/s at {rows[-1]['clients']} clients / one at a time: {ratio:.2f}")


if __name__ == "__main__":
    main()

"""
The physical limit of the same server on the same machine, for comparison: redis-benchmark
when the binary exists, and always a raw redis-py pipeline (what any Python client can reach).
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import time
from typing import Any

from launcher.bench.measure import Server
from launcher.bench.measure import percentiles


def redis_benchmark(server: Server, payload_bytes: int, quick: bool) -> dict[str, Any] | None:
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return None
    n_serial = 2_000 if quick else 20_000
    n_pipelined = 20_000 if quick else 500_000
    runs = {
        "rpush_1_client_no_pipeline": ["-c", "1", "-n", str(n_serial)],
        "rpush_1_client_pipeline_100": ["-c", "1", "-n", str(n_pipelined), "-P", "100"],
        "rpush_50_clients_pipeline_100": ["-c", "50", "-n", str(n_pipelined), "-P", "100"],
    }
    out: dict[str, Any] = {"binary": binary, "payload_bytes": payload_bytes}
    for name, extra in runs.items():
        args = [binary, "-h", server.host, "-p", str(server.port), "-t", "rpush", "-d", str(payload_bytes), "--csv", *extra]
        proc = subprocess.run(args, capture_output=True, text=True, timeout=600, env={**os.environ})  # noqa: S603
        rows = list(csv.DictReader(io.StringIO(proc.stdout)))
        if proc.returncode != 0 or not rows:
            out[name] = {"error": (proc.stderr or proc.stdout).strip()[-300:]}
            continue
        row = rows[0]
        out[name] = {k: float(v) for k, v in row.items() if k != "test" and v not in (None, "")}
    return out


def raw_pipeline(server: Server, payload_bytes: int, ops: int, samples: int) -> dict[str, Any]:
    """RPUSH of `payload_bytes` through redis-py: MULTI/EXEC batches of 1000, and single round trips."""
    client = server.client()
    payload = b"x" * payload_bytes
    key = "bench:raw:list"
    try:
        client.delete(key)
        t0 = time.perf_counter()
        for start in range(0, ops, 1000):
            pipe = client.pipeline(transaction=True)
            for _ in range(min(1000, ops - start)):
                pipe.rpush(key, payload)
            pipe.execute()
        elapsed = time.perf_counter() - t0
        rtts = []
        for _ in range(samples):
            t = time.perf_counter()
            client.rpush(key, payload)
            rtts.append((time.perf_counter() - t) * 1000)
        get = []
        for _ in range(samples):
            t = time.perf_counter()
            client.lrange(key, 0, 3)
            get.append((time.perf_counter() - t) * 1000)
    finally:
        client.delete(key)
        client.close()
    return {
        "payload_bytes": payload_bytes,
        "multi_exec_batches_of_1000_ops_per_s": round(ops / elapsed),
        "single_rpush_round_trip_ms": percentiles(rtts),
        "single_lrange_round_trip_ms": percentiles(get),
    }

"""
``python -m launcher.bench``: native and resilient side by side against one Redis server,
then a table on stdout, ``bench.json`` and (with matplotlib) ``bench.png`` in ``bench.out_dir``.
See launcher/bench/measure.py for what each number means.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
import time
from dataclasses import asdict
from datetime import UTC
from datetime import datetime
from pathlib import Path
from typing import Any

from launcher.bench import measure as M
from launcher.bench.cluster import cluster_section
from launcher.bench.cluster import render_cluster
from launcher.bench.config import BenchSettings
from launcher.bench.machine import describe_machine
from launcher.bench.machine import python_speed_ms
from launcher.bench.node import node_section
from launcher.bench.node import node_targets
from launcher.bench.node import render_node
from launcher.bench.node import startup_section
from launcher.bench.physical import raw_pipeline
from launcher.bench.physical import redis_benchmark
from launcher.bench.sampler import Sampler
from launcher.errors import LauncherError
from launcher.servers.redis_process import LOOPBACK
from launcher.servers.redis_process import ClusterTopology
from launcher.servers.redis_process import RedisProcess
from launcher.store.connection import parse_address


class BenchError(LauncherError):
    exit_code = 3


def say(text: str) -> None:
    print(text, flush=True)


def run_bench(b: BenchSettings) -> dict[str, Any]:
    started = time.monotonic()
    tag = f"{random.getrandbits(24):06X}"
    workdir = Path(tempfile.mkdtemp(prefix="bench-redis-"))
    proc = None
    try:
        if b.redis_address:
            host, port = parse_address(b.redis_address)
            owner = "given"
        else:
            proc = RedisProcess(workdir, appendonly=True, appendfsync="everysec").start()
            host, port, owner = LOOPBACK, proc.port, "started by the bench"
    except Exception as e:  # noqa: BLE001
        raise BenchError(f"could not start a Redis server for the benchmark: {e}") from None
    server = M.Server(host, port)
    try:
        client = server.client()
        info = client.info("server")
        persistence = client.info("persistence")
        fsync = client.config_get("appendfsync").get("appendfsync")
        client.close()
    except Exception as e:  # noqa: BLE001
        raise BenchError(f"Redis at {host}:{port} does not answer: {e}") from None
    aof = f"AOF {'on' if int(persistence.get('aof_enabled', 0)) else 'OFF'}, appendfsync {fsync}"
    result: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": describe_machine(info),
        "server": {"address": f"{host}:{port}", "owner": owner, "persistence": aof,
                   "redis_version": info.get("redis_version")},
        "settings": asdict(b),
    }
    say(f"Benchmark: native vs resilient on Redis {info.get('redis_version')} at {host}:{port} ({owner}; {aof})")
    m = result["machine"]
    say(f"  machine: {m['cpu_model']}, {m['cpu_cores']} cores, {m['memory_gib']} GiB; Python {m['python']}, "
        f"nautilus_trader {m['nautilus_trader']}; load average {m['load_average_at_start']}")
    dbs = M.Databases(server, b.buffer_interval_ms)
    traders: list[str] = []

    def trader(name: str) -> str:
        traders.append(f"BENCH{name}-{tag}")
        return traders[-1]

    try:
        if "micro" in b.sections:
            _micro_sections(b, result, dbs, trader, traders)
        if "node" in b.sections:
            say("- node throughput (flood strategy, one launcher process per run)")
            result["node"] = node_section(server, b.node_seconds, b.node_repeats, trader,
                                          lambda: _cleanup(server, traders), workdir / "nodes",
                                          read_rate_per_s=b.node_read_rate or None, dbs=dbs)
        if "startup" in b.sections:
            say("- start-up to RUNNING, empty store vs a recovered state")
            result["startup"] = startup_section(dbs, b.startup_orders, b.startup_repeats, b.startup_timeout_s, trader,
                                                workdir / "nodes")
        if "cluster" in b.sections:
            say(f"- {b.cluster_k} launcher processes at once: one server vs a Redis Cluster (3 primaries, 1 replica each)")
            cluster = ClusterTopology(workdir / "cluster").start()
            try:
                result["cluster"] = cluster_section(server, cluster, b.cluster_k, b.cluster_seconds, trader,
                                                    workdir / "k-nodes")
            finally:
                cluster.stop()
    finally:
        dbs.close_all()
        _cleanup(server, traders)
        shutil.rmtree(dbs.spill_dir, ignore_errors=True)
        if proc is not None:
            proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)
    result["targets"] = targets(result)
    result["duration_s"] = round(time.monotonic() - started, 1)
    result["machine"]["python_speed_ms_at_end"] = python_speed_ms()
    return result


def _micro_sections(b: BenchSettings, result: dict[str, Any], dbs: M.Databases, trader, traders: list[str]) -> None:
    """The facade-level measurements of launcher/bench/measure.py, into `result`."""
    server = dbs.server
    payload = _payload_size()
    say("- physical limit (same server, same machine)")
    result["physical"] = {
        "redis_benchmark": redis_benchmark(server, payload, b.quick) if b.redis_benchmark else None,
        "raw_pipeline": raw_pipeline(server, payload, 20_000 if b.quick else 200_000, b.samples),
    }
    say("- hot path (caller thread, buffered)")
    result["hot_path_us"] = {be: M.hot_path(dbs, be, b.samples, trader(f"HOT{be[0].upper()}")) for be in M.BACKENDS}
    say("- end to end (call -> readable in Redis)")
    result["end_to_end_ms"] = {
        M.NATIVE: {mode: M.end_to_end(dbs, M.NATIVE, mode, b.e2e_samples, trader(f"E2EN{mode[0].upper()}"))
                   for mode in ("buffered", "immediate")},
        M.RESILIENT: {mode: M.end_to_end(dbs, M.RESILIENT, mode, b.e2e_samples, trader(f"E2ER{mode[0].upper()}"))
                      for mode in ("buffered", "sync")},
    }
    _cleanup(server, traders)
    say("- sustained durable throughput")
    runs: dict[str, list[dict[str, Any]]] = {M.NATIVE: [], M.RESILIENT: []}
    for n in range(b.throughput_repeats):  # alternating, so both backends see the VM alike
        for backend in (M.NATIVE, M.RESILIENT):
            runs[backend].append(M.throughput(dbs, backend, b.throughput_ops, trader(f"TP{backend[0].upper()}{n}")))
        _cleanup(server, traders)
    result["throughput"] = {
        **{backend: _median_run(backend_runs) for backend, backend_runs in runs.items()},
        "resilient_sync": M.throughput(dbs, M.RESILIENT, b.sync_throughput_ops, trader("TPS"), durability="sync"),
    }
    result["write_costs"] = M.write_costs(dbs, 240, trader("COST"))
    profile: dict[str, Any] = {}
    if b.profile:
        # A separate run: the sampler itself costs the measured threads GIL time.
        sampler = Sampler()
        profiled = M.throughput(dbs, M.RESILIENT, b.throughput_ops, trader("TPP"), sampler=sampler)
        profile["resilient_throughput"] = {**sampler.top(), "run_durable_ops_per_s": profiled["durable_ops_per_s"]}
    _cleanup(server, traders)
    say("- recovery and single-entity reads")
    result["recovery"] = []
    for i, size in enumerate(sorted(b.sizes)):
        name = trader(f"REC{size}")
        written = M.write_state(dbs, name, size, b.events_per_order, b.positions_ratio)
        say(f"  {size} orders: state written in {written['write_s']}s ({written['positions']} positions)")
        if i == 0:
            orders, positions = M.state_ids(server, name)
            result["read_ms"] = {be: M.reads(dbs, be, name, orders, positions, b.samples) for be in M.BACKENDS}
        case: dict[str, Any] = {"orders": size, **written}
        repeats = b.recovery_repeats if size <= 10_000 else 1
        for backend in M.BACKENDS:
            runs = []
            for _ in range(repeats):
                runs.append(M.recover(dbs, backend, name))
                if backend == M.NATIVE and runs[-1]["load_s"] > 60:
                    break  # one slow native run is enough to know
            best = min(runs, key=lambda x: x["load_s"])
            best["runs"] = len(runs)
            best["all_load_s"] = [round(x["load_s"], 4) for x in runs]
            case[backend] = best
            say(f"    {backend:<9} load {best['load_s']:.3f}s (+ index/integrity {best['index_and_integrity_s']:.3f}s), "
                f"loaded {best['loaded']['orders']} orders, {best['loaded']['positions']} positions")
        if b.profile and size == max(b.sizes):
            sampler = Sampler()  # an extra, unmeasured run: sampling slows what it watches
            profiled = M.recover(dbs, M.RESILIENT, name, sampler=sampler)
            profile[f"resilient_recovery_{size}"] = {**sampler.top(), "run_load_s": round(profiled["load_s"], 3)}
        case["speedup"] = case[M.NATIVE]["load_s"] / max(1e-9, case[M.RESILIENT]["load_s"])
        result["recovery"].append(case)
        M.delete_trader(server, name)
    result["profile"] = profile


def _cleanup(server: M.Server, traders: list[str]) -> None:
    for name in traders:
        M.delete_trader(server, name)


def _payload_size() -> int:
    """Size of a typical serialized order event (for the physical-limit runs)."""
    objs = M.Objects("BENCH-SIZE")
    order = objs.limit()
    event = objs.accepted(order)
    return len(M.serializer().serialize(event))


# -- targets ----------------------------------------------------------------------------------------


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median durable rate, listing every run's rate (shared VMs vary)."""
    ranked = sorted(runs, key=lambda run: run["durable_ops_per_s"])
    return {**ranked[(len(ranked) - 1) // 2], "runs_durable_ops_per_s": [run["durable_ops_per_s"] for run in runs]}


# Fewer writes than this are a few batches: the rate is then mostly the buffer interval.
SUSTAINED_MIN_WRITES = 20_000


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    out = []

    def add(target: str, value: str, met: bool | None) -> None:
        out.append({"target": target, "value": value, "met": met})

    hot = r.get("hot_path_us", {})
    if hot:
        worst = max(v["p99"] for v in hot[M.RESILIENT].values())
        add("write latency p99 < 5 ms: hot path, every write (resilient)", f"{worst / 1000:.3f} ms", worst < 5000)
        slower = [
            f"{op} p50 {hot[M.RESILIENT][op]['p50']:.1f} vs {hot[M.NATIVE][op]['p50']:.1f} us, "
            f"p99 {hot[M.RESILIENT][op]['p99']:.1f} vs {hot[M.NATIVE][op]['p99']:.1f} us"
            for op in hot[M.RESILIENT]
            if hot[M.RESILIENT][op]["p50"] > hot[M.NATIVE][op]["p50"] or hot[M.RESILIENT][op]["p99"] > hot[M.NATIVE][op]["p99"]
        ]
        add("resilient hot path no slower than native (p50 and p99, each write)",
            "; ".join(slower) if slower else "every write at or below native", not slower)
    e2e = r.get("end_to_end_ms", {})
    if e2e:
        sync = e2e[M.RESILIENT]["sync"]["visible_ms"]["p99"]
        add("write latency p99 < 5 ms: durable (sync mode, call to readable in Redis)", f"{sync:.3f} ms", sync < 5)
    reads = r.get("read_ms", {})
    if reads:
        worst = max(v["p99"] for v in reads[M.RESILIENT].values())
        add("read latency p99 < 2 ms (load_order, load_position; resilient)", f"{worst:.3f} ms", worst < 2)
    tp = r.get("throughput", {})
    if tp:
        ops = tp[M.RESILIENT]["durable_ops_per_s"]
        writes = tp[M.RESILIENT]["writes"]
        # A short run measures the buffer interval and one round trip, not a sustained rate.
        short = writes < SUSTAINED_MIN_WRITES
        note = f" (not judged: {writes:,} writes; a sustained rate needs bench.throughput_ops >= {SUSTAINED_MIN_WRITES:,})"
        add("throughput > 10,000 ops/s (durable, resilient buffered)", f"{ops:,} ops/s" + (note if short else ""),
            None if short else ops > 10_000)
        costs = r.get("write_costs")
        bound = (f"; one interpreter's ceiling {costs['one_interpreter_ceiling_ops_per_s']:,} ops/s "
                 f"({costs['gil_us_per_write']} us of GIL time per write)") if costs else ""
        add("durable throughput >= 100,000 ops/s (resilient buffered)", f"{ops:,} ops/s{bound}" + (note if short else ""),
            None if short else ops >= 100_000)
    for target, value, met in node_targets(r):
        add(target, value, met)
    for case in r.get("recovery", []):
        n = case["orders"]
        res, nat = case[M.RESILIENT], case[M.NATIVE]
        complete = res["loaded"]["orders"] == n and res["loaded"]["positions"] == case["positions"]
        add(f"100% state recovered ({n} orders, {case['positions']} positions; resilient)",
            f"{res['loaded']['orders']} orders, {res['loaded']['positions']} positions", complete)
        if n == 10_000:
            add("recovery of 10k orders + 1k positions <= 0.5 s (resilient load)", f"{res['load_s']:.3f} s",
                res["load_s"] <= 0.5)
            add("recovery >= 4x faster than native (10k)", f"{case['speedup']:.1f}x ({nat['load_s']:.3f} s native)",
                case["speedup"] >= 4)
    return out


# -- output ---------------------------------------------------------------------------------------


def _pair(d: dict[str, float] | None, scale: float = 1.0, digits: int = 1) -> str:
    if not d:
        return "-"
    return f"{d['p50'] * scale:.{digits}f} / {d['p99'] * scale:.{digits}f}"


def _runs(run: dict[str, Any]) -> str:
    return " ".join(f"{rate / 1000:.1f}k" for rate in run["runs_durable_ops_per_s"])


def render(r: dict[str, Any]) -> str:
    m, s = r["machine"], r["server"]
    lines = [
        "",
        f"Machine: {m['cpu_model']}, {m['cpu_cores']} cores, {m['memory_gib']} GiB RAM, {m['os']}; "
        f"Redis {s['redis_version']} ({s['persistence']}, {s['owner']}, loopback); Python {m['python']}, "
        f"nautilus_trader {m['nautilus_trader']}, redis-py {m['redis_py']}, hiredis {m['hiredis']}; "
        f"load average at start {m['load_average_at_start']}; commit {m.get('git_commit')}; "
        f"speed check (1M-step Python loop, lower is faster) {m.get('python_speed_ms_at_start')} ms at start, "
        f"{m.get('python_speed_ms_at_end')} ms at end",
        "",
        f"| {'metric':<58} | {'native':>20} | {'resilient':>20} |",
        f"|{'-' * 60}|{'-' * 22}|{'-' * 22}|",
    ]

    def row(metric: str, native: str, resilient: str) -> None:
        lines.append(f"| {metric:<58} | {native:>20} | {resilient:>20} |")

    hot = r.get("hot_path_us", {})
    for op in ("add_order", "update_order", "update_position", "update_account"):
        if op in hot.get(M.NATIVE, {}):
            row(f"hot path {op} p50 / p99 (us)", _pair(hot[M.NATIVE][op]), _pair(hot[M.RESILIENT][op]))
    e2e = r.get("end_to_end_ms", {})
    if e2e:
        bi = r["settings"]["buffer_interval_ms"]
        row(f"end to end, buffered {bi} ms, p50 / p99 (ms)", _pair(e2e[M.NATIVE]["buffered"]["visible_ms"], digits=2),
            _pair(e2e[M.RESILIENT]["buffered"]["visible_ms"], digits=2))
        row("end to end, sync (native: immediate, no ack) p50 / p99 (ms)",
            _pair(e2e[M.NATIVE]["immediate"]["visible_ms"], digits=2), _pair(e2e[M.RESILIENT]["sync"]["visible_ms"], digits=2))
    reads = r.get("read_ms", {})
    for op in ("load_order", "load_position"):
        if op in reads.get(M.NATIVE, {}):
            row(f"read {op} p50 / p99 (ms)", _pair(reads[M.NATIVE][op], digits=3), _pair(reads[M.RESILIENT][op], digits=3))
    tp = r.get("throughput", {})
    if tp:
        row("durable throughput, buffered (ops/s, until acknowledged)", f"{tp[M.NATIVE]['durable_ops_per_s']:,}",
            f"{tp[M.RESILIENT]['durable_ops_per_s']:,}")
        if len(tp[M.RESILIENT].get("runs_durable_ops_per_s", [])) > 1:
            row("  every run (ops/s; the median is above)", _runs(tp[M.NATIVE]), _runs(tp[M.RESILIENT]))
        row("  of which caller submit rate (ops/s)", f"{tp[M.NATIVE]['submit_ops_per_s']:,}",
            f"{tp[M.RESILIENT]['submit_ops_per_s']:,}")
        row("durable throughput, sync, one writer (ops/s)", "n/a (no sync mode)", f"{tp['resilient_sync']['durable_ops_per_s']:,}")
    for case in r.get("recovery", []):
        label = f"recovery {case['orders']:,} orders x{r['settings']['events_per_order']} ev + {case['positions']:,} pos (s)"
        row(label, f"{case[M.NATIVE]['load_s']:.3f}", f"{case[M.RESILIENT]['load_s']:.3f} ({case['speedup']:.1f}x)")
        row("  + build_index and check_integrity (s, same code)", f"{case[M.NATIVE]['index_and_integrity_s']:.3f}",
            f"{case[M.RESILIENT]['index_and_integrity_s']:.3f}")
    if len(lines) == 5:  # no facade-level section ran: no empty table
        del lines[3:]
    lines += render_node(r)
    lines += render_cluster(r)
    wc = r.get("write_costs")
    if wc:
        lines.append("")
        lines.append(f"Resilient write cost per facade write, one idle thread ({wc['writes']} writes, us): "
                     f"facade call {wc['facade_us']} + serialization {wc['serialize_us']} (NautilusTrader's to_dict "
                     f"{wc['nautilus_to_dict_us']} of it) + batch packing {wc['pack_us']} + send and reply parsing "
                     f"{wc['send_and_parse_cpu_us']} = {wc['gil_us_per_write']} us of GIL time "
                     f"-> at most {wc['one_interpreter_ceiling_ops_per_s']:,} durable ops/s in one process "
                     f"(round trip incl. Redis {wc['round_trip_us']} us)")
    phys = r.get("physical", {})
    rb = phys.get("redis_benchmark")
    raw = phys.get("raw_pipeline")
    if phys:
        lines.append("")
        lines.append("Physical limit on the same server and machine:")
    if rb:
        for name, v in rb.items():
            if isinstance(v, dict) and "rps" in v:
                lines.append(f"  redis-benchmark {name} ({rb['payload_bytes']} B): {v['rps']:,.0f} ops/s, "
                             f"p50 {v.get('p50_latency_ms', 0):.3f} ms, p99 {v.get('p99_latency_ms', 0):.3f} ms")
    elif phys:
        lines.append("  redis-benchmark: not found (raw redis-py pipeline only)")
    if raw:
        lines.append(f"  redis-py MULTI/EXEC batches of 1000 RPUSH ({raw['payload_bytes']} B): "
                     f"{raw['multi_exec_batches_of_1000_ops_per_s']:,} ops/s; single RPUSH round trip p50 / p99 "
                     f"{_pair(raw['single_rpush_round_trip_ms'], digits=3)} ms")
    lines.append("")
    lines.append("Targets:")
    for t in r.get("targets", []):
        mark = {True: "MET   ", False: "MISSED", None: "n/a   "}[t["met"]]
        lines.append(f"  [{mark}] {t['target']}: {t['value']}")
    tp = r.get("throughput", {})
    costs = [(f"throughput {k}", v.get("redis_server")) for k, v in tp.items()]
    costs += [(f"recovery {c['orders']} {b}", c[b].get("redis_server")) for c in r.get("recovery", []) for b in M.BACKENDS]
    costs = [(name, c) for name, c in costs if c]
    if costs:
        lines.append("")
        lines.append("Redis server time per phase (INFO cpu / commandstats):")
        for name, c in costs:
            top = ", ".join(f"{x['command']} {x['calls']:,} x {x['usec_per_call']} us" for x in c["commands"][:3])
            lines.append(f"  {name:<28} Redis CPU {c['redis_cpu_s']:.2f}s of {c['wall_s']:.2f}s wall "
                         f"({(c['redis_cpu_share'] or 0) * 100:.0f}%): {top}")
    prof = r.get("profile") or {}
    for phase, top in prof.items():
        lines.append("")
        lines.append(f"Profile ({phase}, a separate sampled run; {top['samples']} samples; threads {top['threads']}): "
                     "top self time")
        for item in top["self"][:8]:
            lines.append(f"  {item['share'] * 100:5.1f}%  {item['function']}")
    lines.append("")
    lines.append(f"Benchmark finished in {r.get('duration_s')}s")
    return "\n".join(lines)


def write_outputs(r: dict[str, Any], out_dir: Path, plot: bool) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "bench.json"]
    paths[0].write_text(json.dumps(r, indent=2, default=str) + "\n")
    (out_dir / "bench.txt").write_text(render(r) + "\n")
    paths.append(out_dir / "bench.txt")
    if plot and r.get("recovery"):
        png = write_plot(r, out_dir / "bench.png")
        if png is not None:
            paths.append(png)
    return paths


def write_plot(r: dict[str, Any], path: Path) -> Path | None:
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        say("  (no PNG: matplotlib is not installed; pip install '.[plot]')")
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 5.5))
    cases = r.get("recovery", [])
    sizes = [c["orders"] for c in cases]
    for backend, color in ((M.NATIVE, "tab:red"), (M.RESILIENT, "tab:blue")):
        ax1.plot(sizes, [c[backend]["load_s"] for c in cases], "o-", color=color, label=backend)
    if 10_000 in sizes:
        ax1.plot([10_000], [0.5], marker="*", markersize=12, color="tab:green", linestyle="none",
                 label="target: 10k orders <= 0.5 s")
    ax1.set_xscale("log")
    ax1.set_yscale("log")
    ax1.set_xlabel(f"orders ({r['settings']['events_per_order']} events each) + {r['settings']['positions_ratio']:.0%} positions")
    ax1.set_ylabel("recovery (load) time, s")
    ax1.set_title("Recovery time vs state size")
    ax1.grid(True, which="both", alpha=0.3)
    ax1.legend()

    labels, native, resilient = [], [], []
    hot = r.get("hot_path_us", {})
    for op in ("add_order", "update_order", "update_position", "update_account"):
        if op in hot.get(M.NATIVE, {}):
            for p in ("p50", "p99"):
                labels.append(f"hot {op}\n{p}")
                native.append(hot[M.NATIVE][op][p] / 1000)
                resilient.append(hot[M.RESILIENT][op][p] / 1000)
    e2e = r.get("end_to_end_ms", {})
    if e2e:
        for p in ("p50", "p99"):
            labels.append(f"e2e sync*\n{p}")
            native.append(e2e[M.NATIVE]["immediate"]["visible_ms"][p])
            resilient.append(e2e[M.RESILIENT]["sync"]["visible_ms"][p])
    reads = r.get("read_ms", {})
    for op in ("load_order", "load_position"):
        if op in reads.get(M.NATIVE, {}):
            for p in ("p50", "p99"):
                labels.append(f"{op}\n{p}")
                native.append(reads[M.NATIVE][op][p])
                resilient.append(reads[M.RESILIENT][op][p])
    x = range(len(labels))
    width = 0.4
    ax2.bar([i - width / 2 for i in x], native, width, color="tab:red", label="native")
    ax2.bar([i + width / 2 for i in x], resilient, width, color="tab:blue", label="resilient")
    ax2.axhline(5, color="tab:orange", linestyle="--", linewidth=1, label="spec: write p99 < 5 ms")
    ax2.axhline(2, color="tab:green", linestyle=":", linewidth=1, label="spec: read p99 < 2 ms")
    ax2.set_yscale("log")
    ax2.set_xticks(list(x))
    ax2.set_xticklabels(labels, fontsize=7, rotation=60, ha="right")
    ax2.set_ylabel("ms (log)")
    ax2.set_title("Latency percentiles (*native: immediate, unacknowledged)")
    ax2.grid(True, axis="y", which="both", alpha=0.3)
    ax2.legend()
    m = r["machine"]
    fig.suptitle(f"native vs resilient - {m['cpu_model']}, {m['cpu_cores']} cores, Redis {r['server']['redis_version']} "
                 f"({r['server']['persistence']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

"""
Typed configuration of ``python -m launcher.bench`` (``conf/bench_app.yaml``); every key can be
overridden on the command line as ``bench.<key>=<value>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from launcher.config.compose import compose_config
from launcher.config.compose import to_object
from launcher.config.schema import check_numbers
from launcher.errors import ConfigError
from launcher.store.connection import parse_address


CONFIG_NAME = "bench_app"
QUICK_SIZES = [200, 1000]
SECTIONS = ("micro", "node", "startup", "cluster")  # measure.py; node.py (node, startup); cluster.py
DEFAULT_SECTIONS = ("micro", "node", "startup")  # cluster starts six more servers and K nodes: asked for by name
QUICK_NODE_SECONDS = 3.0
QUICK_STARTUP_ORDERS = [500]


@dataclass
class BenchSettings:
    sizes: list[int] = field(default_factory=lambda: [1000, 10000, 100000])  # orders per recovery case
    events_per_order: int = 4  # OrderInitialized, Submitted, Accepted, Filled (>= 3)
    positions_ratio: float = 0.1  # positions per order in the recovery state
    recovery_repeats: int = 3  # best-of for sizes up to 10k; larger sizes run once
    samples: int = 2000  # hot-path and read samples per operation and backend
    e2e_samples: int = 300  # end-to-end durability samples per mode (buffered ones take one interval each)
    throughput_ops: int = 100_000  # facade writes in the sustained-throughput run
    throughput_repeats: int = 3  # runs per backend (alternating); the median is reported, every run listed
    sync_throughput_ops: int = 10_000  # writes in the sync-durability throughput run
    buffer_interval_ms: int = 100  # both backends' buffered mode (the launcher's default)
    quick: bool = False  # CI smoke: tiny sizes and sample counts
    redis_address: str | None = None  # "host:port" of a running server; default: start one (AOF everysec)
    out_dir: str = "var/bench"
    plot: bool = True  # PNG when matplotlib is installed (pip install '.[plot]')
    profile: bool = True  # sample the resilient backend's threads: which functions dominate
    redis_benchmark: bool = True  # run redis-benchmark when the binary exists (else a raw redis-py pipeline only)
    sections: list[str] = field(default_factory=lambda: list(DEFAULT_SECTIONS))  # which of SECTIONS to run
    node_seconds: float = 15.0  # each flood run of the node section, seconds
    node_repeats: int = 5  # flood runs per backend (rotated each round); the median is reported, every run listed
    # (5, not 3: one backend's single runs spread by up to 35% on a quiet 2-core VM)
    # Write and read latency under the flood (launcher/bench/latency.py): every cache write of the node timed,
    # and a second process reading at this rate (reads/s); 0 measures neither (throughput alone).
    node_read_rate: float = 200.0
    startup_orders: list[int] = field(default_factory=lambda: [10_000, 100_000])  # orders in each start-up state
    startup_repeats: int = 5  # starts per case up to 10k orders (the median is reported); larger states start once
    startup_timeout_s: float = 300.0  # a start not RUNNING by then is stopped and reported as such
    cluster_k: int = 4  # cluster section: launcher processes started at once, one trader each
    cluster_seconds: float = 10.0  # cluster section: each node's flood run, seconds


@dataclass
class BenchAppConfig:
    bench: BenchSettings = field(default_factory=BenchSettings)


def register() -> None:
    ConfigStore.instance().store(name="bench_schema", node=BenchAppConfig)


def compose_bench_config(overrides: list[str] | None = None) -> DictConfig:
    """Compose ``conf/{CONFIG_NAME}.yaml`` with `overrides`; ConfigError (one line) on any problem."""
    register()
    return compose_config(overrides, config_name=CONFIG_NAME)


def to_bench_settings(cfg: DictConfig):
    app: BenchAppConfig = to_object(cfg)
    return validate_bench(app.bench)


def validate_bench(b: BenchSettings) -> BenchSettings:
    check_numbers(b, "bench.")
    if b.quick:
        b.sizes = [s for s in b.sizes if s <= max(QUICK_SIZES)] or list(QUICK_SIZES)
        b.samples = min(b.samples, 200)
        b.e2e_samples = min(b.e2e_samples, 20)
        b.throughput_ops = min(b.throughput_ops, 4000)
        b.sync_throughput_ops = min(b.sync_throughput_ops, 500)
        b.recovery_repeats = 1
        b.node_seconds = min(b.node_seconds, QUICK_NODE_SECONDS)
        b.node_repeats = 1
        b.startup_orders = [s for s in b.startup_orders if s <= max(QUICK_STARTUP_ORDERS)] or list(QUICK_STARTUP_ORDERS)
        b.startup_repeats = 1
        b.cluster_k = min(b.cluster_k, 2)
        b.cluster_seconds = min(b.cluster_seconds, QUICK_NODE_SECONDS)
    if not b.sizes or any(s <= 0 for s in b.sizes):
        raise ConfigError("bench.sizes", f"must be positive order counts, was {b.sizes}")
    if not 3 <= b.events_per_order <= 4:
        raise ConfigError("bench.events_per_order", "must be 3 or 4 (init, submitted, accepted[, filled])")
    if not 0 <= b.positions_ratio <= 1:
        raise ConfigError("bench.positions_ratio", "must be between 0 and 1")
    if b.positions_ratio and b.events_per_order < 4:
        raise ConfigError("bench.positions_ratio", "positions need filled orders: bench.events_per_order=4")
    if not b.sections or any(name not in SECTIONS for name in b.sections):
        raise ConfigError("bench.sections", f"must be some of {list(SECTIONS)}, was {b.sections}")
    if not b.startup_orders or any(s <= 0 for s in b.startup_orders):
        raise ConfigError("bench.startup_orders", f"must be positive order counts, was {b.startup_orders}")
    for key in ("samples", "e2e_samples", "throughput_ops", "sync_throughput_ops", "recovery_repeats", "throughput_repeats",
                "node_seconds", "node_repeats", "startup_repeats", "startup_timeout_s", "cluster_k", "cluster_seconds"):
        if getattr(b, key) <= 0:
            raise ConfigError(f"bench.{key}", "must be positive")
    if b.node_read_rate < 0:
        raise ConfigError("bench.node_read_rate", "must be zero (no latency measured) or a positive rate, reads/s")
    if b.buffer_interval_ms <= 0:
        raise ConfigError("bench.buffer_interval_ms", "must be positive (the buffered mode's interval)")
    if b.redis_address:
        try:
            parse_address(b.redis_address)
        except ValueError as e:
            raise ConfigError("bench.redis_address", str(e)) from None
    return b

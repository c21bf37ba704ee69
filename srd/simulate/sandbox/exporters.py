"""Fake exporters for the sandbox and the benchmarks, served by aiohttp on loopback.

``FakeNodeExporter`` serves a page shaped like a real node exporter's on a large host
(thousands of lines: per-CPU modes, interrupts, disks, filesystems, network devices, Go
runtime) whose counters advance with time. ``FakeStreamPlatform`` is the streaming
platform's stats: a JSON endpoint and an exporter page with the ``vilokanam_*`` names.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager

from aiohttp import web

from srd import clock
from srd.http.app import serving

TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"
CPU_MODES = ("idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user")
NETWORK_FIELDS = (
    "bytes",
    "compressed",
    "drop",
    "errs",
    "fifo",
    "frame",
    "multicast",
    "packets",
)
DISK_COUNTERS = (
    "node_disk_read_bytes_total",
    "node_disk_read_time_seconds_total",
    "node_disk_reads_completed_total",
    "node_disk_reads_merged_total",
    "node_disk_written_bytes_total",
    "node_disk_write_time_seconds_total",
    "node_disk_writes_completed_total",
    "node_disk_writes_merged_total",
    "node_disk_io_time_seconds_total",
    "node_disk_io_time_weighted_seconds_total",
    "node_disk_discards_completed_total",
    "node_disk_flush_requests_total",
)
_COLLECTOR_NAMES = (
    "arp bcache bonding btrfs conntrack cpu cpufreq diskstats dmi edac entropy fibrechannel "
    "filefd filesystem hwmon infiniband ipvs loadavg mdadm meminfo netclass netdev netstat nfs "
    "nfsd nvme os powersupplyclass pressure rapl schedstat selinux sockstat softnet stat tapestats "
    "textfile thermal_zone time timex udp_queues uname vmstat xfs zfs"
)
COLLECTORS = _COLLECTOR_NAMES.split()


def _family(name: str, kind: str, help_text: str) -> Iterator[str]:
    yield f"# HELP {name} {help_text}"
    yield f"# TYPE {name} {kind}"


class FakeNodeExporter:
    """A node exporter page for a host with ``cpus`` CPUs; counters grow with ``clock``."""

    def __init__(
        self,
        cpus: int = 64,
        disks: int = 8,
        interfaces: int = 16,
        clock: Callable[[], float] = clock.monotonic,
    ) -> None:
        self.cpus, self.disks, self.interfaces = cpus, disks, interfaces
        self._clock = clock
        self._started = clock()
        self._cached: tuple[int, bytes] | None = None

    def page(self) -> str:
        return "\n".join(self._lines(self._clock() - self._started)) + "\n"

    def body(self) -> bytes:
        """The page, rendered at most once a second (as scrape-heavy benchmarks need)."""
        second = int(self._clock())
        if self._cached is None or self._cached[0] != second:
            self._cached = (second, self.page().encode())
        return self._cached[1]

    def _lines(self, t: float) -> Iterator[str]:
        yield from _family("go_gc_duration_seconds", "summary", "A summary of GC pauses.")
        for q, v in (("0", 1.2e-05), ("0.25", 2.9e-05), ("0.5", 4.1e-05), ("1", 0.0012)):
            yield f'go_gc_duration_seconds{{quantile="{q}"}} {v}'
        yield f"go_gc_duration_seconds_sum {0.0004 * t:.6f}"
        yield f"go_gc_duration_seconds_count {int(t / 10)}"
        yield from _family("go_goroutines", "gauge", "Number of goroutines that currently exist.")
        yield "go_goroutines 9"
        yield from _family("node_boot_time_seconds", "gauge", "Node boot time, in unixtime.")
        yield "node_boot_time_seconds 1.7e+09"
        yield from _family(
            "node_cpu_seconds_total", "counter", "Seconds the CPUs spent in each mode."
        )
        for cpu in range(self.cpus):
            for i, mode in enumerate(CPU_MODES):
                share = 0.7 if mode == "idle" else 0.3 / (len(CPU_MODES) - 1)
                value = 1e5 + i + share * t
                yield f'node_cpu_seconds_total{{cpu="{cpu}",mode="{mode}"}} {value:.2f}'
        yield from _family(
            "node_cpu_scaling_frequency_hertz", "gauge", "Current scaled CPU thread frequency."
        )
        for cpu in range(self.cpus):
            yield f'node_cpu_scaling_frequency_hertz{{cpu="{cpu}"}} 2.4e+09'
        yield from _family("node_interrupts_total", "counter", "Interrupt details.")
        for irq in range(24):
            for cpu in range(self.cpus):
                yield (
                    f'node_interrupts_total{{cpu="{cpu}",devices="IO-APIC {irq}-edge timer\\\\'
                    f'\\"{irq}\\"",info="",type="{irq}"}} {int(irq * 10 + t)}'
                )
        for name in DISK_COUNTERS:
            yield from _family(name, "counter", f"The total {name[10:-6].replace('_', ' ')}.")
            for disk in range(self.disks):
                yield f'{name}{{device="nvme{disk}n1"}} {1e6 * (disk + 1) + 1000 * t:.0f}'
        for field in ("avail_bytes", "free_bytes", "size_bytes", "files", "files_free"):
            name = f"node_filesystem_{field}"
            yield from _family(name, "gauge", f"Filesystem {field.replace('_', ' ')}.")
            for disk in range(self.disks):
                yield (
                    f'{name}{{device="/dev/nvme{disk}n1p1",fstype="ext4",'
                    f'mountpoint="/data/{disk}"}} {5e11 - 1000 * t:.0f}'
                )
        for direction in ("receive", "transmit"):
            for field in NETWORK_FIELDS:
                name = f"node_network_{direction}_{field}_total"
                yield from _family(
                    name, "counter", f"Network device statistic {direction}_{field}."
                )
                for n in range(self.interfaces):
                    yield f'{name}{{device="eth{n}"}} {1e9 + 5e4 * t * (n + 1):.0f}'
        for name in ("node_load1", "node_load5", "node_load15"):
            yield from _family(name, "gauge", f"{name[5:]}m load average.")
            yield f"{name} 0.42"
        yield from _family("node_memory_MemAvailable_bytes", "gauge", "MemAvailable in bytes.")
        yield "node_memory_MemAvailable_bytes 1.2e+11"
        for name in ("node_scrape_collector_duration_seconds", "node_scrape_collector_success"):
            yield from _family(name, "gauge", "node_exporter: collector scrape statistics.")
            for collector in COLLECTORS:
                yield f'{name}{{collector="{collector}"}} {0.001 if "duration" in name else 1}'
        yield from _family("node_softnet_processed_total", "counter", "Packets processed.")
        for cpu in range(self.cpus):
            yield f'node_softnet_processed_total{{cpu="{cpu}"}} {int(1e6 + 100 * t)}'
        yield from _family("node_time_seconds", "gauge", "System time in seconds since epoch.")
        yield f"node_time_seconds {clock.now():.3f}"


LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class FakeStreamPlatform:
    """The platform's stream stats; set ``active_streams`` and ``viewers``, ``observe``
    transaction latencies."""

    def __init__(self, active_streams: int = 3, viewers: int = 120) -> None:
        self.active_streams = active_streams
        self.viewers = viewers
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0

    def observe(self, seconds: float) -> None:
        for i, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                self.buckets[i] += 1
        self.buckets[-1] += 1
        self.latency_sum += seconds

    def page(self) -> str:
        lines = [
            *_family("vilokanam_active_streams", "gauge", "Live streams."),
            f"vilokanam_active_streams {self.active_streams}",
            *_family("vilokanam_viewer_count", "gauge", "Connected viewers."),
            f"vilokanam_viewer_count {self.viewers}",
            *_family("vilokanam_transaction_latency_seconds", "histogram", "Transaction latency."),
        ]
        bounds = [repr(b) for b in LATENCY_BUCKETS] + ["+Inf"]
        for bound, count in zip(bounds, self.buckets, strict=True):
            lines.append(f'vilokanam_transaction_latency_seconds_bucket{{le="{bound}"}} {count}')
        lines.append(f"vilokanam_transaction_latency_seconds_sum {self.latency_sum!r}")
        lines.append(f"vilokanam_transaction_latency_seconds_count {self.buckets[-1]}")
        return "\n".join(lines) + "\n"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/stats", self._stats)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def _stats(self, _: web.Request) -> web.Response:
        body = {"active_streams": self.active_streams, "viewers": self.viewers}
        return web.Response(text=json.dumps(body), content_type="application/json")

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=self.page().encode(), headers={"Content-Type": TEXT_FORMAT})


def node_exporter_app(exporter: FakeNodeExporter) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=exporter.body(), headers={"Content-Type": TEXT_FORMAT})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """Serve ``app`` on a free loopback port; yield its base URL."""
    async with serving(app, "127.0.0.1", 0) as port:
        yield f"http://127.0.0.1:{port}"

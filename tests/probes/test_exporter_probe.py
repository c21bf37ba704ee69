"""The exporter probe: extraction matches prometheus-client's parser; scrapes are bounded in
time and size; the chain cross-check; the platform's stream metrics re-exported."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from srd.config.probes import ExporterTarget, ProbesConfig, StreamStatsTarget
from srd.model import Observation, Sample
from srd.probes.crosscheck import Heights, cross_check, page_heights
from srd.probes.exporter import SUFFIXES, ExporterProbe, Extractor, PageError
from srd.probes.metrics import ProbeMetrics
from srd.probes.streams import StreamStatsProbe
from srd.simulate.sandbox.exporters import (
    FakeNodeExporter,
    FakeStreamPlatform,
    node_exporter_app,
    serve,
)

Key = tuple[str, tuple[tuple[str, str], ...], str, str]


def _key(name: str, labels: Iterable[tuple[str, str]], value: float, ts: object) -> Key:
    # repr() so NaN compares equal to NaN, ints compare with their float, and keys sort.
    return (name, tuple(labels), repr(float(value)), repr(ts))


def reference(page: str, names: set[str]) -> list[Key]:
    """What prometheus-client's parser returns for ``names`` (and their histogram series)."""
    found = []
    for family in text_string_to_metric_families(page):
        for s in family.samples:
            base = next((s.name[: -len(x)] for x in SUFFIXES if s.name.endswith(x)), None)
            if s.name in names or base in names:
                found.append(_key(s.name, s.labels.items(), s.value, s.timestamp))
    return sorted(found)


def extracted(page: str, names: set[str]) -> list[Key]:
    return sorted(_key(s.name, s.labels, s.value, s.timestamp) for s in Extractor(names)(page))


# --- page generation for the property test -------------------------------------------------

metric_names = st.from_regex(r"[a-z][a-z0-9_:]{0,7}", fullmatch=True)
label_names = st.from_regex(r"[a-z][a-z0-9_]{0,5}", fullmatch=True).filter(
    lambda n: n not in {"le", "quantile"}
)
label_values = st.text(st.characters(exclude_categories=["Cs"]), max_size=8)
numbers = st.one_of(
    st.integers(-(10**20), 10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(
        lambda v: "NaN" if math.isnan(v) else ("+Inf" if v == math.inf else repr(v))
    ),
    st.sampled_from(["+Inf", "-Inf", "NaN", "1e-3", "-0", ".5"]),
)
timestamps = st.none() | st.integers(-(2**40), 2**45)


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@st.composite
def sample_lines(draw: st.DrawFn, name: str, extra: dict[str, str] | None = None) -> str:
    labels = draw(st.dictionaries(label_names, label_values, max_size=3))
    labels.update(extra or {})
    text = ",".join(f'{k}="{escape(v)}"' for k, v in labels.items())
    if bool(labels) and draw(st.booleans()):
        text += ","  # trailing comma: allowed by the format
    line = f"{name}{{{text}}}" if bool(labels) or draw(st.booleans()) else name
    line += " " + draw(numbers)
    ts = draw(timestamps)
    return line if ts is None else f"{line} {ts}"


@st.composite
def families(draw: st.DrawFn, name: str) -> list[str]:
    kind = draw(st.sampled_from(["counter", "gauge", "histogram", "summary", "untyped", "bare"]))
    lines = []
    if draw(st.booleans()):
        help_text = draw(st.text(st.characters(exclude_categories=("Cs", "Cc")), max_size=20))
        lines.append(f"# HELP {name} {escape(help_text).replace(chr(34), '')}")
    if kind == "counter":
        name += "_total"
    if kind != "bare":
        lines.append(f"# TYPE {name} {kind}")
    count = draw(st.integers(1, 4))
    for _ in range(count):
        if kind == "histogram":
            for le in ("0.1", "1", "+Inf"):
                lines.append(draw(sample_lines(f"{name}_bucket", {"le": le})))
            lines.append(draw(sample_lines(f"{name}_sum")))
            lines.append(draw(sample_lines(f"{name}_count")))
        elif kind == "summary":
            lines.append(draw(sample_lines(name, {"quantile": "0.5"})))
            lines.append(draw(sample_lines(f"{name}_sum")))
        else:
            lines.append(draw(sample_lines(name)))
    return lines


@st.composite
def pages(draw: st.DrawFn) -> tuple[str, set[str]]:
    names = draw(st.lists(metric_names, min_size=1, max_size=5, unique=True))
    lines = [line for name in names for line in draw(families(name))]
    wanted = draw(st.sets(st.sampled_from(names), min_size=1)) | draw(
        st.sets(metric_names, max_size=1)
    )
    counters = {n + "_total" for n in wanted}  # a counter family's samples end in _total
    return "\n".join(lines) + "\n", wanted | counters


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pages())
def test_extraction_returns_the_reference_parsers_values_for_the_names_asked(
    page_and_names: tuple[str, set[str]],
) -> None:
    page, names = page_and_names
    assert extracted(page, names) == reference(page, names)


# --- extraction, by example ----------------------------------------------------------------

PAGE = r"""# HELP node_cpu_seconds_total Seconds the CPUs spent in each mode.
# TYPE node_cpu_seconds_total counter
node_cpu_seconds_total{cpu="0",mode="idle"} 9096.11
node_cpu_seconds_total{cpu="0",mode="user"} 12.5
# HELP odd Values with escapes \\ and \n in help.
# TYPE odd gauge
odd{path="C:\\dir",quote="say \"hi\"",nl="a\nb"} +Inf
odd{path="x"} -Inf 1700000000123
odd{path="y"} NaN
# TYPE lat histogram
lat_bucket{le="0.5"} 1
lat_bucket{le="+Inf"} 3
lat_sum 2.5
lat_count 3
node_cpu_seconds_total_other 1
"""


def test_extraction_unescapes_labels_and_reads_infinities_nan_and_timestamps() -> None:
    samples = Extractor({"odd"})(PAGE)
    assert samples[0].labels == (
        ("path", "C:\\dir"),
        ("quote", 'say "hi"'),
        ("nl", "a\nb"),
    )
    assert samples[0].value == math.inf
    assert (samples[1].value, samples[1].timestamp) == (-math.inf, 1700000000.123)
    assert math.isnan(samples[2].value)
    assert extracted(PAGE, {"odd"}) == reference(PAGE, {"odd"})


def test_a_histogram_name_keeps_its_buckets_sum_and_count_and_nothing_with_a_longer_name() -> None:
    assert [s.name for s in Extractor({"lat"})(PAGE)] == [
        "lat_bucket",
        "lat_bucket",
        "lat_sum",
        "lat_count",
    ]
    cpu = Extractor({"node_cpu_seconds_total"})(PAGE)
    assert {s.name for s in cpu} == {"node_cpu_seconds_total"}


def test_label_filters_keep_only_matching_series() -> None:
    samples = Extractor({"node_cpu_seconds_total"}, {"node_cpu_seconds_total": {"mode": "user"}})(
        PAGE
    )
    assert [(s.label("mode"), s.value) for s in samples] == [("user", 12.5)]


def test_a_malformed_wanted_line_fails_the_page_and_a_malformed_unwanted_line_does_not() -> None:
    page = 'good 1\nbad{x="1" 2\nother{{{ nonsense\n'
    assert [s.value for s in Extractor({"good"})(page)] == [1.0]
    with pytest.raises(PageError, match="bad"):
        Extractor({"bad"})(page)
    with pytest.raises(PageError, match="invalid number"):
        Extractor({"v"})("v 1_000\n")


def test_extraction_matches_the_reference_on_a_large_fake_node_exporter_page() -> None:
    page = FakeNodeExporter(cpus=8).page()
    names = {"node_cpu_seconds_total", "node_interrupts_total", "go_gc_duration_seconds"}
    assert extracted(page, names) == reference(page, names)
    assert len(extracted(page, names)) > 8 * 8


# --- the probe against servers ------------------------------------------------------------


def exporter_target(url: str, **overrides: Any) -> ExporterTarget:
    fields: dict[str, Any] = {"name": "node", "url": url, "keep": ["node_load1"], "timeout": 0.5}
    return ExporterTarget.model_validate(fields | overrides)


async def test_probe_of_a_node_exporter_page_is_up_with_only_the_kept_series(
    session: aiohttp.ClientSession,
) -> None:
    async with serve(node_exporter_app(FakeNodeExporter(cpus=4))) as url:
        target = exporter_target(f"{url}/metrics", keep=["node_cpu_seconds_total", "node_load1"])
        obs = await ExporterProbe(target, session)()
    assert obs.up and obs.reason == ""
    assert obs.samples is not None
    assert {s.name for s in obs.samples} == {"node_cpu_seconds_total", "node_load1"}
    assert len(obs.samples) == 4 * 8 + 1


def big_body_app(size: int, chunked: bool) -> web.Application:
    async def handler(request: web.Request) -> web.StreamResponse:
        if not chunked:
            return web.Response(body=b"x 1\n" * (size // 4))
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(size // 4096):
            await response.write(b"x 1\n" * 1024)
        return response

    app = web.Application()
    app.router.add_get("/metrics", handler)
    return app


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_body_over_the_limit_is_refused_with_the_reason(
    session: aiohttp.ClientSession, chunked: bool
) -> None:
    async with serve(big_body_app(1 << 20, chunked)) as url:
        target = exporter_target(f"{url}/metrics", keep=["x"], max_body_bytes=64 * 1024)
        obs = await ExporterProbe(target, session)()
    assert not obs.up
    assert "exceeds the limit of 65536 bytes" in obs.reason
    assert obs.samples is None


async def test_a_target_that_does_not_answer_in_time_is_down_with_a_timeout_reason(
    session: aiohttp.ClientSession,
) -> None:
    release = asyncio.Event()

    async def slow(_: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="x 1\n")

    app = web.Application()
    app.router.add_get("/metrics", slow)
    async with serve(app) as url:
        obs = await ExporterProbe(exporter_target(f"{url}/metrics", timeout=0.1), session)()
        release.set()
    assert not obs.up
    assert obs.reason == "timeout after 0.1s"
    assert obs.samples is None


async def test_an_error_status_or_a_refused_connection_is_down_never_zero(
    session: aiohttp.ClientSession,
) -> None:
    async with serve(web.Application()) as url:
        obs = await ExporterProbe(exporter_target(f"{url}/metrics"), session)()
    assert (obs.up, obs.reason, obs.samples) == (False, "unexpected status 404", None)
    refused = await ExporterProbe(exporter_target(url), session)()  # server is gone
    assert not refused.up
    assert refused.reason.startswith("connection refused by 127.0.0.1:")


# --- cross-check ---------------------------------------------------------------------------


def test_page_heights_read_best_and_finalized_and_are_none_when_either_is_missing() -> None:
    page = (
        'substrate_block_height{status="best",chain="dev"} 120\n'
        'substrate_block_height{status="finalized",chain="dev"} 118\n'
        'substrate_block_height{status="sync_target",chain="dev"} 120\n'
    )
    samples = Extractor({"substrate_block_height"})(page)
    assert page_heights(samples) == Heights(120, 118)
    assert page_heights(samples, chain="other") is None
    assert page_heights(samples[:1]) is None


def test_views_within_tolerance_agree() -> None:
    check = cross_check(Heights(101, 99), Heights(100, 98), None)
    assert not check.disagreement and not check.stale and check.reason == ""
    assert (check.best_diff, check.finalized_diff) == (1, 1)


def test_a_page_far_from_rpc_is_flagged_as_disagreement() -> None:
    check = cross_check(Heights(150, 148), Heights(100, 98), None, tolerance=2)
    assert check.disagreement
    assert "best 100 vs 150" in check.reason


def test_a_page_that_stops_while_rpc_advances_is_flagged_stale_and_recovers_when_it_moves() -> None:
    state = None
    flags = []
    for rpc_best in (100, 101, 102, 103):
        check = cross_check(Heights(rpc_best, rpc_best - 2), Heights(100, 98), state, tolerance=5)
        state = check.state
        flags.append(check.stale)
    assert flags == [False, False, False, True]
    assert "stuck at 100" in check.reason
    moved = cross_check(Heights(104, 102), Heights(104, 102), state)
    assert not moved.stale


def test_a_page_that_stops_with_the_chain_is_not_stale() -> None:
    state = None
    for _ in range(10):
        check = cross_check(Heights(100, 98), Heights(100, 98), state)
        state = check.state
        assert not check.stale


def test_cross_check_results_are_exported_per_chain_and_node() -> None:
    metrics = ProbeMetrics(CollectorRegistry())
    metrics.record_cross_check("dev", "v1", cross_check(Heights(200, 198), Heights(1, 1), None))
    registry = metrics.registry
    labels = {"chain": "dev", "node": "v1"}
    assert registry.get_sample_value("srd_chain_exporter_disagreement", labels) == 1
    assert registry.get_sample_value("srd_chain_exporter_stale", labels) == 0


# --- platform stream metrics ---------------------------------------------------------------


def platform_obs(target: str, page: str) -> Observation:
    samples = tuple(Extractor({"vilokanam_active_streams", "vilokanam_viewer_count",
                               "vilokanam_transaction_latency_seconds"})(page))  # fmt: skip
    return Observation("exporter", target, 0.0, 0.01, up=True, samples=samples)


def scraped(registry: CollectorRegistry) -> dict[str, Any]:
    """The platform's stream families that have samples (a labelled counter with no child
    yet, like vilokanam_blocks_produced_total, prints only its HELP and TYPE)."""
    text = generate_latest(registry).decode()
    families = text_string_to_metric_families(text)
    return {f.name: f for f in families if f.name.startswith("vil") and f.samples}


def test_platform_gauges_and_latency_histogram_are_summed_over_sources_and_re_exported() -> None:
    first, second = FakeStreamPlatform(3, 100), FakeStreamPlatform(2, 20)
    for seconds in (0.02, 0.3, 7.0):
        first.observe(seconds)
    second.observe(0.3)
    metrics = ProbeMetrics(CollectorRegistry())
    metrics.record(platform_obs("web-1", first.page()))
    metrics.record(platform_obs("web-2", second.page()))

    families = scraped(metrics.registry)
    assert families["vilokanam_active_streams"].samples[0].value == 5
    assert families["vilokanam_viewer_count"].samples[0].value == 120
    histogram = families["vilokanam_transaction_latency_seconds"]
    assert histogram.type == "histogram"
    values = {(s.name, s.labels.get("le")): s.value for s in histogram.samples}
    assert values["vilokanam_transaction_latency_seconds_bucket", "0.025"] == 1
    assert values["vilokanam_transaction_latency_seconds_bucket", "0.5"] == 3
    assert values["vilokanam_transaction_latency_seconds_bucket", "+Inf"] == 4
    assert values["vilokanam_transaction_latency_seconds_count", None] == 4
    assert values["vilokanam_transaction_latency_seconds_sum", None] == pytest.approx(7.62)


def test_a_failed_source_keeps_its_last_values_and_no_source_means_no_platform_metrics() -> None:
    metrics = ProbeMetrics(CollectorRegistry())
    assert scraped(metrics.registry) == {}
    metrics.record(platform_obs("web-1", FakeStreamPlatform(4, 40).page()))
    metrics.record(Observation("exporter", "web-1", 0.0, 0.01, up=False, reason="timeout"))
    assert scraped(metrics.registry)["vilokanam_active_streams"].samples[0].value == 4


async def test_stream_stats_endpoint_gives_the_counts_as_platform_samples(
    session: aiohttp.ClientSession,
) -> None:
    platform = FakeStreamPlatform(active_streams=7, viewers=300)
    async with serve(platform.app()) as url:
        stats = {"name": "stats", "url": f"{url}/stats", "timeout": 0.5}
        obs = await StreamStatsProbe(StreamStatsTarget.model_validate(stats), session)()
        broken = StreamStatsTarget.model_validate(stats | {"url": f"{url}/metrics"})
        bad = await StreamStatsProbe(broken, session)()
    assert obs.up
    assert obs.samples == (
        Sample("vilokanam_active_streams", (), 7.0),
        Sample("vilokanam_viewer_count", (), 300.0),
    )
    assert not bad.up and bad.reason.startswith("invalid JSON")


# --- config --------------------------------------------------------------------------------


def test_exporter_config_has_a_body_limit_by_default_and_refuses_filters_on_unkept_names() -> None:
    config = ProbesConfig.model_validate(
        {"exporter": [{"name": "n", "url": "http://127.0.0.1:9100/metrics", "keep": ["up"]}]}
    )
    assert config.exporter[0].max_body_bytes == 4 * 1024 * 1024
    with pytest.raises(ValueError, match="not in keep"):
        exporter_target("http://x/metrics", match={"node_load5": {"a": "b"}})


def test_an_exporter_cross_checked_against_a_node_must_name_a_substrate_target() -> None:
    page = {
        "name": "v1-metrics",
        "url": "http://127.0.0.1:9615/metrics",
        "keep": ["substrate_block_height"],
        "substrate_node": "v1",
    }
    node = {"name": "v1", "url": "http://127.0.0.1:9944"}
    config = ProbesConfig.model_validate({"substrate": [node], "exporter": [page]})
    assert config.exporter[0].substrate_node == "v1"
    with pytest.raises(ValueError, match="is not a substrate target"):
        ProbesConfig.model_validate({"exporter": [page]})
    with pytest.raises(ValueError, match="needs substrate_block_height"):
        ExporterTarget.model_validate(page | {"keep": ["up"]})

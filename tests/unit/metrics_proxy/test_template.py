"""Our own families rendered from templates and kept blocks: byte for byte what rendering the
families writes, and every change of a number in the very next scrape."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily

from sidecars.metrics_proxy.access_log import AccessLogMetrics
from sidecars.metrics_proxy.client import Fetched, FetchError
from sidecars.metrics_proxy.exposition import Family, Format, Sample, render
from sidecars.metrics_proxy.own import OwnMetrics
from sidecars.metrics_proxy.scrape import Scraper
from sidecars.metrics_proxy.stub_status import StubStatus
from sidecars.metrics_proxy.telemetry import Telemetry
from sidecars.metrics_proxy.template import Template, format_number
from sidecars.runtime.nginx_log import PRESETS

FORMATS = list(Format)
text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
names = st.sampled_from(["a", "b_total", "c:d", "e_created", "f_total_created", "g_bucket"])
labels = st.lists(st.tuples(st.sampled_from(["x", "le", "y_z"]), text), max_size=3).map(tuple)
numbers = st.one_of(
    st.integers(-(2**60), 2**60),
    st.floats(allow_nan=True, allow_infinity=True),
)


@st.composite
def families(draw: st.DrawFn) -> list[Family]:
    result = []
    for _ in range(draw(st.integers(0, 4))):
        name = draw(names)
        kind = draw(st.sampled_from(["counter", "gauge", "histogram", "summary", "untyped"]))
        samples = draw(
            st.lists(
                st.tuples(st.sampled_from([name, name + "_total", name + "_created"]), labels),
                max_size=4,
            )
        )
        help_text = draw(st.one_of(st.just(""), text, st.just('100% of it \\ "quoted"\n')))
        result.append(
            Family(name, kind, help_text, tuple(Sample(n, lbl, 0.0) for n, lbl in samples))
        )
    return result


def with_values(fams: list[Family], values: list[float]) -> list[Family]:
    it = iter(values)
    return [
        Family(f.name, f.type, f.help, tuple(Sample(s.name, s.labels, next(it)) for s in f.samples))
        for f in fams
    ]


@settings(max_examples=200, deadline=None)
@given(families(), st.data())
def test_a_template_renders_what_render_writes(fams: list[Family], data: st.DataObject) -> None:
    template = Template(fams)
    values = data.draw(st.lists(numbers, min_size=template.size, max_size=template.size))
    filled = with_values(fams, [float(v) for v in values])
    for fmt in FORMATS:
        assert template.render(values, fmt) == render(filled, fmt, end=False)


@given(numbers)
def test_format_number_is_format_value_of_the_float(value: float) -> None:
    from sidecars.metrics_proxy.exposition import format_value

    assert format_number(value) == format_value(float(value))


PAGE = (
    "Active connections: {a} \nserver accepts handled requests\n {b} {b} {c} \n"
    "Reading: 0 Writing: 1 Waiting: {w} \n"
)


class Nginx:
    """A stub_status source whose numbers the test moves, or which fails."""

    target = "stub"
    timeout = 1.0

    def __init__(self) -> None:
        self.accepted = 10
        self.failing = False

    async def get(self) -> Fetched:
        await asyncio.sleep(0)  # an answer takes a turn of the loop, as a socket's does
        if self.failing:
            raise FetchError("connect", "refused")
        self.accepted += 1
        page = PAGE.format(a=1, b=self.accepted, c=self.accepted * 2, w=self.accepted % 7)
        return Fetched(page.encode(), "text/plain")

    async def close(self) -> None:
        pass


def build_info_registry() -> tuple[CollectorRegistry, list[str]]:
    version = ["1"]

    class Info:
        def collect(self):  # type: ignore[no-untyped-def]
            family = GaugeMetricFamily("sidecars_build_info", "Version.", labels=["version"])
            family.add_metric([version[0]], 1.0)
            yield family

    registry = CollectorRegistry(auto_describe=True)
    registry.register(Info())
    return registry, version


LOG = PRESETS["sidecars"].parse
LINE = '10.0.0.1 - - [24/Nov/2026:06:00:00 +0000] "GET / HTTP/1.1" {s} 12 "-" "c" 0.004 "-"'


def scraper_under_test() -> tuple[Scraper, Nginx, AccessLogMetrics, list[str]]:
    nginx = Nginx()
    access = AccessLogMetrics(duration_buckets=(0.005, 0.1), upstream_buckets=(0.1,))
    registry, version = build_info_registry()
    scraper = Scraper(
        stub_status=nginx,  # type: ignore[arg-type]
        access_log=access,
        registry=registry,
        telemetry=Telemetry(),
        const_labels=(("pod", 'p-1 "50%"'),),
    )
    return scraper, nginx, access, version


def expected(scraper: Scraper, nginx: Nginx, fmt: Format) -> bytes:
    """What rendering all families the slow way writes for the reading just served."""
    status = None
    if not nginx.failing:
        a = nginx.accepted
        status = StubStatus(1, a, a, a * 2, 0, 1, a % 7)
    return render(scraper.own.families(status), fmt)


async def test_every_scrape_shows_the_numbers_of_its_own_round() -> None:
    scraper, nginx, access, version = scraper_under_test()
    seen = []
    for step in range(12):
        if step == 3:
            access.observe(LOG(LINE.format(s=200)))  # new lines: the access-log block changes
        if step == 4:
            access.observe(LOG(LINE.format(s=503)))  # a new label set
        if step == 5:
            nginx.failing = True  # nginx_up 0 and a new fetch-error series
        if step == 7:
            nginx.failing = False
        if step == 8:
            version[0] = "2"  # the registry's families change
        if step == 9:
            scraper.telemetry.scraped("unauthorized")  # a new telemetry series
        if step == 10:
            access.logged = frozenset({"status"})  # the format turned out to log less
        fmt = FORMATS[step % 2]
        body = (await scraper.snapshot()).body(fmt, False)
        # The slow way, from the same numbers: the endpoint counts the scrape after serving.
        assert body == expected(scraper, nginx, fmt), f"step {step}"
        scraper.telemetry.scraped("ok")
        seen.append(body)
    assert len(set(seen)) == len(seen)  # the collections counter alone moves every time


async def test_a_counter_change_shows_up_in_the_next_scrape() -> None:
    scraper, _, access, _ = scraper_under_test()
    pod = 'pod="p-1 \\"50%\\""'
    before = (await scraper.snapshot()).body(Format.TEXT, False).decode()
    assert f"nginx_connections_accepted{{{pod}}} 11\n" in before
    assert "nginx_http_responses_total{" not in before
    access.observe(LOG(LINE.format(s=200)))
    after = (await scraper.snapshot()).body(Format.TEXT, False).decode()
    assert f"nginx_connections_accepted{{{pod}}} 12\n" in after
    assert f'nginx_http_responses_total{{status="200",method="GET",{pod}}} 1\n' in after
    assert f"metrics_proxy_collections_total{{{pod}}} 2\n" in after
    access.observe(LOG(LINE.format(s=200)))
    again = (await scraper.snapshot()).body(Format.TEXT, False).decode()
    assert f'nginx_http_responses_total{{status="200",method="GET",{pod}}} 2\n' in again


async def test_concurrent_scrapes_share_a_round_and_later_ones_get_a_new_one() -> None:
    scraper, nginx, _, _ = scraper_under_test()
    first = await asyncio.gather(*(scraper.snapshot() for _ in range(5)))
    assert len({id(s) for s in first}) == 1
    later = await scraper.snapshot()
    assert later is not first[0]
    assert b"accepted" in later.body(Format.TEXT, False)
    assert nginx.accepted == 12


def test_own_families_parts_match_with_nothing_observed() -> None:
    registry, _ = build_info_registry()
    own = OwnMetrics(telemetry=Telemetry(), registry=registry)
    for status in (None, StubStatus(0, 2**60, 0, 0, 0, 0, 0)):
        for fmt in FORMATS:
            assert own.parts(status).render(fmt) == render(own.families(status), fmt)


telemetry_steps = st.lists(
    st.one_of(
        st.tuples(st.just("scraped"), st.sampled_from(["ok", "unauthorized"])),
        st.tuples(
            st.just("fetched"),
            st.sampled_from(["stub_status", "app", "db"]),
            st.floats(0, 10),
            st.sampled_from([None, "timeout", "connect", "parse"]),
        ),
        st.tuples(st.just("up"), st.sampled_from(["app", "db"]), st.booleans()),
        st.tuples(
            st.just("dropped"),
            st.sampled_from(["app", "db"]),
            st.sampled_from(["invalid", "name_collision"]),
            st.integers(1, 5),
        ),
        st.tuples(st.just("collected")),
    ),
    max_size=30,
)


@settings(max_examples=100, deadline=None)
@given(telemetry_steps)
def test_telemetry_values_follow_its_families(steps: list[tuple[object, ...]]) -> None:
    telemetry = Telemetry()
    for step in steps:
        if step[0] == "scraped":
            telemetry.scraped(step[1])  # type: ignore[arg-type]
        elif step[0] == "fetched":
            telemetry.fetched(step[1], step[2], step[3])  # type: ignore[arg-type]
        elif step[0] == "up":
            telemetry.upstream_up[step[1]] = step[2]  # type: ignore[index,assignment]
        elif step[0] == "dropped":
            telemetry.dropped_series(step[1], step[2], step[3])  # type: ignore[arg-type]
        else:
            telemetry.collections += 1
        fams = telemetry.families()
        template = Template(fams)
        for fmt in FORMATS:
            assert template.render(telemetry.values(), fmt) == render(fams, fmt, end=False)

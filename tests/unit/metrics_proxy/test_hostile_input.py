"""Property tests of what the metrics-proxy reads from outside: stub_status pages, upstream
exposition bodies, and its settings. Arbitrary input never raises anything but the parser's
own error; valid input comes back as the same samples; whatever is merged renders as valid
OpenMetrics. Bounded (max_examples) so the run stays at a few seconds."""

from __future__ import annotations

import string

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

from sidecars.metrics_proxy.client import parse_target
from sidecars.metrics_proxy.collector import stub_status_families
from sidecars.metrics_proxy.exposition import LABEL_NAME, Family, Format, Sample, render
from sidecars.metrics_proxy.merge import (
    ExpositionError,
    _histogram_valid,
    merge,
    openmetrics_error,
    parse_exposition,
)
from sidecars.metrics_proxy.settings import (
    PART,
    RESERVED_LABELS,
    MetricsProxySettings,
    parse_label_name,
    parse_label_pair,
    parse_merge_target,
)
from sidecars.metrics_proxy.stub_status import StubStatus, StubStatusError, parse_stub_status
from sidecars.runtime.settings import SettingsError, load

TEXT = "text/plain; version=0.0.4"
OM = "application/openmetrics-text; version=1.0.0"
BOUNDED = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- stub_status ---------------------------------------------------------------------------

PAGE_BITS = st.sampled_from(
    [
        "Active connections: ",
        "server accepts handled requests",
        "Reading: ",
        "Writing: ",
        "Waiting: ",
        "requests",
        ":",
        " ",
        "\n",
        "\r\n",
        "\t",
        "0",
        "7",
        "12345678901234567890123",
        "1" * 5000,
        "\u0663",  # ARABIC-INDIC DIGIT THREE: \d matches it
        "\u00b2",  # SUPERSCRIPT TWO: isdigit() but not \d
        "x",
        "\ufffd",
    ]
)


@BOUNDED
@given(st.one_of(st.text(max_size=300), st.lists(PAGE_BITS, max_size=30).map("".join)))
@example("Active connections: " + "9" * 5000 + " \n")
def test_stub_status_parser_raises_only_its_own_error(text: str) -> None:
    try:
        status = parse_stub_status(text)
    except StubStatusError as exc:
        assert "\n" not in str(exc)
        return
    assert all(isinstance(v, int) and v >= 0 for v in vars_of(status))


def vars_of(status: StubStatus) -> list[int]:
    return [getattr(status, name) for name in StubStatus.__slots__]


COUNT = st.integers(min_value=0, max_value=2**80)


@BOUNDED
@given(
    st.tuples(*(COUNT for _ in range(7))),
    st.sampled_from([" ", "  ", "\t"]),
    st.sampled_from(["\n", "\r\n"]),
    st.booleans(),
)
def test_stub_status_round_trip(values: tuple[int, ...], space: str, eol: str, trail: bool) -> None:
    active, accepted, handled, requests, reading, writing, waiting = values
    end = (space if trail else "") + eol
    page = (
        f"Active connections: {active}{end}server accepts handled requests{eol}"
        f"{space}{accepted}{space}{handled}{space}{requests}{end}"
        f"Reading: {reading}{space}Writing: {writing}{space}Waiting: {waiting}{end}"
    )
    assert parse_stub_status(page) == StubStatus(*values)


# --- the merge's exposition parser ---------------------------------------------------------

LINES = st.sampled_from(
    [
        "# TYPE a counter\n",
        "# TYPE a_total counter\n",
        "# TYPE a histogram\n",
        "# TYPE a summary\n",
        "# TYPE a gauge\n",
        "# TYPE b gauge\n",
        "# HELP a x\\y\n",
        "# HELP a \n",
        "a 1\n",
        "a -1\n",
        "a_total 5\n",
        "a_total -5\n",
        'a_bucket{le="1"} 3\n',
        'a_bucket{le="0.5"} 1\n',
        'a_bucket{le="+Inf"} 3\n',
        'a_bucket{le="inf"} 3\n',
        'a_bucket{le="x"} 1\n',
        'a_bucket{x="1",le="+Inf"} 2\n',
        "a_bucket 1\n",
        "a_sum 1\n",
        "a_sum -1\n",
        "a_count 3\n",
        "a_count 2.5\n",
        'a{quantile="0.5"} 1\n',
        'a{quantile="x"} 1\n',
        'a{quantile="2"} 1\n',
        "a NaN\n",
        "a_total NaN\n",
        "a 1 123\n",
        "a_sum 1 1700000000000\n",
        'a{b="c",b="d"} 1\n',
        'a{b="c"} 1\n',
        'b{a="1"} 2\n',
        'b{le="1"} 2\n',
        "a_created 1\n",
        "b_count 1\n",
        "# EOF\n",
        "a{} 1\n",
        'a{x="\\n\\"\\\\"} 1\n',
        "\n",
        "a 1",
    ]
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(LINES, max_size=12), st.sampled_from([TEXT, OM]))
@example(["# TYPE a_total counter\n", "a_created 1\n"], TEXT)
@example(["# TYPE a histogram\n", "a_sum -1\n", "# TYPE a gauge\n", "a 1\n"], TEXT)
def test_merged_upstream_always_renders_valid_openmetrics(lines: list[str], kind: str) -> None:
    """Whatever an upstream sends: refused whole with ExpositionError, or merged into output
    that prometheus_client's strict OpenMetrics parser and its text parser both read."""
    body = "".join(lines).encode()
    try:
        parsed = parse_exposition(body, kind, labels=(("upstream", "a"), ("pod", "p")))
    except ExpositionError:
        return
    merged = merge(stub_status_families(None), [("a", parsed.families)])
    for _ in parse_openmetrics(render(merged.families, Format.OPENMETRICS).decode()):
        pass
    for _ in parse_text(render(merged.families, Format.TEXT).decode()):
        pass


@BOUNDED
@given(st.binary(max_size=400), st.sampled_from([TEXT, OM, ""]))
@example(b"\xff\xfe garbage\n", TEXT)
@example(b'a{x="' + b"\\" * 50 + b'"} 1\n', TEXT)
def test_arbitrary_bytes_raise_only_exposition_error(body: bytes, kind: str) -> None:
    try:
        parse_exposition(body, kind)
    except ExpositionError as exc:
        assert "\n" not in str(exc)


NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True).filter(
    lambda n: not n.endswith(("_total", "_bucket", "_sum", "_count", "_created", "_info"))
)
LABEL_VALUES = st.text(alphabet=string.printable + "é€\u2028", max_size=12)
LABELSETS = st.dictionaries(
    st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True).filter(
        lambda n: n not in ("le", "quantile")
    ),
    LABEL_VALUES,
    max_size=3,
)
VALUES = st.floats(allow_nan=False, width=64) | st.integers(-(2**40), 2**40).map(float)


@st.composite
def valid_families(draw: st.DrawFn) -> list[Family]:
    families = []
    for name in draw(st.lists(NAMES, unique=True, max_size=4)):
        kind = draw(st.sampled_from(["gauge", "counter", "histogram"]))
        series = draw(st.lists(LABELSETS, unique_by=lambda d: tuple(sorted(d.items()))))
        samples: list[Sample] = []
        for labels in series:
            pairs = tuple(sorted(labels.items()))
            if kind == "gauge":
                samples.append(Sample(name, pairs, draw(VALUES)))
            elif kind == "counter":
                samples.append(Sample(name + "_total", pairs, abs(draw(VALUES))))
            else:
                bounds = sorted(draw(st.sets(st.sampled_from([0.1, 0.5, 1.0, 2.5, 10.0]))))
                total = 0
                for bound in bounds:
                    total += draw(st.integers(0, 10))
                    le = (("le", repr(bound)),)
                    samples.append(
                        Sample(name + "_bucket", tuple(sorted(pairs + le)), float(total))
                    )
                total += draw(st.integers(0, 10))
                inf = tuple(sorted((*pairs, ("le", "+Inf"))))
                samples.append(Sample(name + "_bucket", inf, float(total)))
                samples.append(Sample(name + "_sum", pairs, abs(draw(VALUES))))
                samples.append(Sample(name + "_count", pairs, float(total)))
        families.append(
            Family(name + ("_total" if kind == "counter" else ""), kind, "", tuple(samples))
        )
    return families


def _series(families: list[Family]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels))): s.value for family in families for s in family.samples
    }


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_families(), st.sampled_from([Format.TEXT, Format.OPENMETRICS]))
def test_valid_exposition_round_trips_to_the_same_samples(
    families: list[Family], fmt: Format
) -> None:
    body = render(families, fmt)
    kind = OM if fmt is Format.OPENMETRICS else TEXT
    parsed = parse_exposition(body, kind)
    assert parsed.invalid == parsed.unsupported == parsed.duplicates == 0
    got = _series(parsed.families)
    want = _series(families)
    assert got.keys() == want.keys()
    for series, value in want.items():
        assert got[series] == pytest.approx(value, rel=1e-15) or got[series] == value


@st.composite
def histograms(draw: st.DrawFn) -> Family:
    """Histograms, mostly nearly well-formed: buckets dropped, reordered, odd spellings."""
    samples = []
    for group in draw(st.lists(st.sampled_from(["", "x"]), min_size=1, max_size=3)):
        pairs = (("g", group),) if group else ()
        les = draw(
            st.lists(
                st.sampled_from(["0.1", "1", "1.0", "+Inf", "inf", "Inf", "-1", "NaN", "x"]),
                max_size=4,
            )
        )
        for le in les:
            value = float(draw(st.integers(-1, 5)) + draw(st.sampled_from([0, 0, 0.5])))
            labels = tuple(sorted((*pairs, ("le", le))))
            samples.append(Sample("h_bucket", labels, value))
        for suffix in draw(st.lists(st.sampled_from(["_sum", "_count", "_created"]), max_size=3)):
            samples.append(Sample("h" + suffix, pairs, float(draw(st.integers(-1, 5)))))
    if draw(st.booleans()):
        samples = draw(st.permutations(samples))
    unique = {(s.name, s.labels): s for s in reversed(samples)}
    ordered = [s for s in samples if unique.get((s.name, s.labels)) is s]
    return Family("h", "histogram", "", tuple(ordered))


@settings(max_examples=300, deadline=None)
@given(histograms())
def test_histogram_fast_check_never_passes_what_the_parser_refuses(family: Family) -> None:
    if _histogram_valid(family):
        text = render([family], Format.OPENMETRICS).decode()
        for _ in parse_openmetrics(text):
            pass
    # and the full check (fast path, else the parser) agrees with the parser
    text = render([family], Format.OPENMETRICS).decode()
    try:
        for _ in parse_openmetrics(text):
            pass
        refused = False
    except Exception:
        refused = True
    assert (openmetrics_error(family) is not None) == refused


# --- settings ------------------------------------------------------------------------------


@BOUNDED
@given(st.text(max_size=20), st.text(max_size=20))
@example("le", "x")
@example("quantile", "x")
@example("__name__", "x")
def test_const_label_names_are_valid_and_never_reserved(name: str, value: str) -> None:
    try:
        parsed_name, parsed_value = parse_label_pair(f"{name}={value}")
    except ValueError as exc:
        assert "\n" not in str(exc)
        return
    assert LABEL_NAME.match(parsed_name)
    assert not parsed_name.startswith("__") and parsed_name not in RESERVED_LABELS
    assert parsed_value == f"{name}={value}".partition("=")[2]


@BOUNDED
@given(st.text(max_size=20))
def test_merge_label_names_are_valid_and_never_reserved(raw: str) -> None:
    try:
        name = parse_label_name(raw)
    except ValueError:
        return
    assert name == "" or (LABEL_NAME.match(name) and not name.startswith("__"))
    assert name not in RESERVED_LABELS


TARGET_BITS = st.sampled_from(
    ["http://", "https://", "unix:", "/", "a", "127.0.0.1", ":", "8080", "99999", "@", "?", "=",
     "[::1]", "user:pw@", "#", " ", "%", "é"]
)  # fmt: skip


@BOUNDED
@given(st.one_of(st.text(max_size=40), st.lists(TARGET_BITS, max_size=8).map("".join)))
def test_targets_parse_or_raise_value_error(raw: str) -> None:
    for parse in (parse_target, parse_merge_target):
        try:
            parse(raw)
        except ValueError as exc:
            assert "\n" not in str(exc)


@pytest.mark.parametrize(
    ("argv", "env", "setting"),
    [
        (["--const-labels", "le=1"], {}, "--const-labels (METRICS_PROXY_CONST_LABELS)"),
        (["--const-labels", "quantile=1"], {}, "--const-labels"),
        ([], {"METRICS_PROXY_CONST_LABELS": "pod=a,le=b"}, "METRICS_PROXY_CONST_LABELS"),
        (["--merge-label", "le"], {}, "--merge-label (METRICS_PROXY_MERGE_LABEL)"),
        (["--merge-label", "quantile"], {}, "--merge-label"),
        (["--merge-label", "__up"], {}, "--merge-label"),
        (["--const-labels", "__meta=x"], {}, "--const-labels"),
    ],
)
def test_reserved_label_names_fail_naming_the_setting(
    argv: list[str], env: dict[str, str], setting: str
) -> None:
    with pytest.raises(SettingsError) as info:
        load(MetricsProxySettings, PART, ["--stub-status-url", "http://x:1/s", *argv], env)
    message = str(info.value)
    assert setting in message and "reserved" in message and "\n" not in message

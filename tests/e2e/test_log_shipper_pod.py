"""e2e-pod: the log-shipper image in the real Pod manifest ships nginx's log lines, read from
the shared `logs` volume, to receivers outside the Pod: each line exactly once, in order.

The receivers run on the host, listening on the host's address on the engine's bridge network
(its gateway), which is how a Pod reaches anything outside it: the tests' NDJSON receiver
(de-duplicates by Idempotency-Key, keeps the parsed fields) and a real rsyslogd over RELP. The
Pod's sink setting is changed by the podman variant's env override, the same mechanism every
e2e test uses: the manifest itself ships to stdout.
"""

from __future__ import annotations

import http.client
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from k8s import variants
from sidecars.log_shipper.sinks import parse_sink
from tests.e2e import pods
from tests.e2e.engine import Podman
from tests.support.ndjson_receiver import Receiver
from tests.support.procs import http_get, wait_until
from tests.support.rsyslog import Rsyslog, have_module, have_rsyslog

# The first test also pays for the session's image builds when this module runs alone.
pytestmark = [
    pytest.mark.e2e_pod,
    pytest.mark.timeout(900),
    pytest.mark.skipif(not have_rsyslog(), reason="rsyslogd is not installed (Debian rsyslog)"),
    pytest.mark.skipif(not have_module("imrelp"), reason="imrelp missing (Debian rsyslog-relp)"),
]

REQUESTS = 200
LOGS = ("access.log", "error.log")
SHIPPER = "log-shipper"


def bridge_gateway(engine: Podman) -> str:
    """The host's address on the engine's network: what a Pod dials to reach the host."""
    (network,) = json.loads(engine("network", "inspect", engine.network).stdout)
    return network["subnets"][0]["gateway"]


@dataclass
class Receivers:
    http: Receiver
    relp: Rsyslog

    @property
    def sinks(self) -> str:
        """LOG_SHIPPER_SINK for the Pod: both receivers at once, each its own pipeline."""
        return f"http={self.http.url},relp={self.relp.address}:{self.relp.relp_port}"

    @property
    def keys(self) -> tuple[str, ...]:
        """The sinks' names in the shipper's metrics and state file: http first, then relp."""
        return tuple(parse_sink(sink).key for sink in self.sinks.split(","))


@pytest.fixture(scope="module")
def receivers(
    engine: Podman, origin: pods.PlayedPod, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Receivers]:
    # netavark brings the bridge (and so the gateway address to listen on) up with the first
    # pod on the network: the origin pod here.
    root = tmp_path_factory.mktemp("log-shipper-pod")
    host = bridge_gateway(engine)
    http = Receiver(root / "http", host=host)
    relp = Rsyslog(root / "rsyslog", address=host)
    try:
        http.start()
        relp.start()
        yield Receivers(http, relp)
    finally:
        http.stop()
        relp.stop()


@pytest.fixture(scope="module")
def app(engine: Podman, origin: pods.PlayedPod, receivers: Receivers) -> Iterator[pods.PlayedPod]:
    pod = pods.play(
        engine, pods.APP_POD, name="sidecars-logs", env={"LOG_SHIPPER_SINK": receivers.sinks}
    )
    try:
        assert pod.play.returncode == 0, pod.play.stderr
        yield pod
    finally:
        engine.down(pod.name)


def log_dir(engine: Podman, app: pods.PlayedPod) -> Path:
    """The Pod's `logs` emptyDir (a named volume under podman), read from the host."""
    mountpoint = engine("volume", "inspect", f"{app.name}-logs", "--format", "{{.Mountpoint}}")
    return Path(mountpoint.stdout.strip())


def file_lines(logs: Path, name: str) -> list[bytes]:
    """The whole lines nginx has written to one of its log files."""
    path = logs / name
    data = path.read_bytes() if path.exists() else b""
    return data[: data.rfind(b"\n") + 1].split(b"\n")[:-1]


def line_count(logs: Path) -> int:
    return sum(len(file_lines(logs, name)) for name in LOGS)


def metric_samples(app: pods.PlayedPod) -> list[Sample]:
    """The log-shipper's /metrics, through the Pod's port 9102."""
    status, body, _ = http_get(app.url(9102, "/metrics"), timeout=5)
    assert status == 200, body[:300]
    return [
        sample
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    ]


def shipped(app: pods.PlayedPod) -> dict[str, float]:
    """log_shipper_shipped_lines_total per sink."""
    return {
        sample.labels["sink"]: sample.value
        for sample in metric_samples(app)
        if sample.name == "log_shipper_shipped_lines_total"
    }


def diagnosis(engine: Podman, app: pods.PlayedPod) -> str:
    return f"log-shipper log:\n{engine.logs(f'{app.name}-{SHIPPER}')[-3000:]}"


@dataclass
class Traffic:
    marker: str
    before: dict[str, float]  # lines shipped per sink when the requests began
    after: dict[str, float]
    logs: Path

    @property
    def requests(self) -> list[str]:
        """The request lines sent, as nginx logs them ($request)."""
        return [f"GET /?e2e={self.marker}-{i:04d} HTTP/1.1" for i in range(REQUESTS)]


@pytest.fixture(scope="module")
def traffic(engine: Podman, app: pods.PlayedPod, receivers: Receivers) -> Traffic:
    """REQUESTS marked requests to nginx, sent once everything already in the logs (nginx's
    start notices, the readiness wait's requests) has been shipped: so every count below is
    exact. Returns once both sinks have shipped every line in the files."""
    pods.wait_http_ok(app.url(9102, "/readyz"), what="log-shipper /readyz")
    pods.wait_http_ok(app.url(8080), what="nginx up")
    logs = log_dir(engine, app)

    def caught_up() -> dict[str, float] | None:
        lines, now = line_count(logs), shipped(app)
        return now if all(now.get(key) == lines for key in receivers.keys) else None

    try:
        before = wait_until(caught_up, timeout=60, interval=0.2, what="the logs shipped so far")
        marker = uuid.uuid4().hex[:12]
        for i in range(REQUESTS):
            status, _, _ = http_get(
                app.url(8080, f"/?e2e={marker}-{i:04d}"),
                headers={"User-Agent": f"sidecars-e2e/{marker}"},
            )
            assert status == 200
        after = wait_until(caught_up, timeout=60, interval=0.2, what="the requests shipped")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{diagnosis(engine, app)}") from None
    return Traffic(marker=marker, before=before, after=after, logs=logs)


def test_http_receiver_holds_every_line_once_in_order_with_fields(
    receivers: Receivers, traffic: Traffic
) -> None:
    entries = receivers.http.lines()
    for name in LOGS:
        path = f"/var/log/nginx/{name}"
        got = [e for e in entries if e["file"] == path]
        # Exactly the file's lines, each once, in the file's order.
        assert [e["line"].encode() for e in got] == file_lines(traffic.logs, name), name
        offsets = [e["offset"] for e in got]
        assert offsets == sorted(set(offsets)), name
    assert len(entries) == traffic.after[receivers.keys[0]]

    # Each request once. Their order is the file's (checked above), not the sending order:
    # nginx logs a request after its response, so two workers may log consecutive requests
    # either way round.
    marked = [e for e in entries if traffic.marker in e["line"]]
    assert sorted(e["fields"]["request"] for e in marked) == traffic.requests
    for entry in marked:
        fields = entry["fields"]  # parsed by --format sidecars (nginx.conf's log_format)
        assert fields["status"] == "200"
        assert fields["http_user_agent"] == f"sidecars-e2e/{traffic.marker}"
        assert int(fields["body_bytes_sent"]) > 0
        assert float(fields["request_time"]) >= 0
    # Error-log lines do not match the access-log format: shipped raw, fields null.
    assert all(e["fields"] is None for e in entries if e["file"].endswith("/error.log"))

    stats = receivers.http.stats()
    # Nothing had to be re-sent, and every batch came gzipped (the default).
    assert stats["duplicates"] == 0 and stats["rejected"] == 0, stats
    assert stats["gzip"] == stats["batches"] > 0, stats


def test_rsyslog_over_relp_holds_every_line_once_in_order(
    app: pods.PlayedPod, receivers: Receivers, traffic: Traffic
) -> None:
    received = receivers.relp.received()
    assert len(received) == traffic.after[receivers.keys[1]]
    for name in LOGS:
        msgid = name.split(".")[0]  # the syslog MSGID is the log file's name
        got = [r.msg for r in received if r.msgid == msgid]
        assert got == file_lines(traffic.logs, name), name
    marked = [r for r in received if traffic.marker.encode() in r.msg]
    assert sorted(r.msg.split(b'"')[1].decode() for r in marked) == traffic.requests
    assert {(r.input, r.hostname, r.app_name) for r in received} == {("imrelp", app.name, "nginx")}


def test_metrics_through_the_pod_port_count_the_shipped_lines(
    app: pods.PlayedPod, receivers: Receivers, traffic: Traffic
) -> None:
    for key in receivers.keys:
        assert traffic.after[key] - traffic.before[key] == REQUESTS, key
    samples = metric_samples(app)
    for key in receivers.keys:
        values = {s.name: s.value for s in samples if s.labels.get("sink") == key}
        assert values["log_shipper_sink_up"] == 1, key
        assert values["log_shipper_queue_bytes"] == 0, key
    assert not [s for s in samples if s.name == "log_shipper_dropped_lines_total"]
    assert http_get(app.url(9102, "/healthz"))[0] == 200


def test_state_file_on_its_own_volume_and_the_logs_read_only_for_the_proxy(
    engine: Podman, app: pods.PlayedPod, receivers: Receivers, traffic: Traffic
) -> None:
    name = f"{app.name}-{SHIPPER}"
    assert engine("exec", name, "id", "-u").stdout.strip() == "101"
    # The shipper's root filesystem is read-only; the logs are writable only for it (it
    # rotates them), read-only for the metrics-proxy.
    proxy = f"{app.name}-metrics-proxy"
    for container, path in ((name, "/etc/probe"), (proxy, "/var/log/nginx/probe")):
        touch = engine("exec", container, "touch", path, check=False)
        assert touch.returncode != 0 and "Read-only file system" in touch.stderr, path

    def acknowledged() -> dict | None:
        """Every stream's offset for every sink, once checkpointed up to the file's end."""
        state = json.loads(engine("exec", name, "cat", "/var/lib/log-shipper/state.json").stdout)
        streams = state["data"]["streams"].values()
        ends = {s["path"]: (traffic.logs / Path(s["path"]).name).stat().st_size for s in streams}
        offsets = {(s["path"], k): v["offset"] for s in streams for k, v in s["sinks"].items()}
        done = all(offset == ends[path] for (path, _), offset in offsets.items())
        return offsets if done else None

    offsets = wait_until(acknowledged, timeout=15, interval=0.2, what="offsets checkpointed")
    assert {sink for _, sink in offsets} == set(receivers.keys)
    assert {path for path, _ in offsets} == {f"/var/log/nginx/{n}" for n in LOGS}


BURST = 2000


def test_pod_deleted_right_after_a_burst_loses_no_request(
    engine: Podman, origin: pods.PlayedPod, receivers: Receivers
) -> None:
    """Issue 9: the Pod is stopped (as a delete does: every container at once, nginx with its
    graceful SIGQUIT, the sidecars with SIGTERM) the moment a burst of requests has been
    answered. The shipper waits for the nginx master to exit, reads the logs to their end and
    delivers before it exits: every request is at the receiver, once."""
    pod = pods.play(
        engine,
        pods.APP_POD,
        name="sidecars-logs-down",
        env={"LOG_SHIPPER_SINK": f"http={receivers.http.url}"},
    )
    try:
        assert pod.play.returncode == 0, pod.play.stderr
        pods.wait_http_ok(pod.url(9102, "/readyz"), what="log-shipper /readyz")
        pods.wait_http_ok(pod.url(8080), what="nginx up")
        marker = uuid.uuid4().hex[:12]
        conn = http.client.HTTPConnection("127.0.0.1", pod.ports[8080], timeout=10)
        try:
            for i in range(BURST):
                conn.request("GET", f"/?e2e={marker}-{i:04d}")
                response = conn.getresponse()
                response.read()
                assert response.status == 200
        finally:
            conn.close()
        # At once, as the kubelet deletes a classic Pod: nginx and its sidecars are sent their
        # stop signals together, with the manifest's grace. Two podman 4.3 quirks are avoided:
        # `podman pod stop` stops the infra container alongside, and the exit of the shared PID
        # namespace's init SIGKILLs every process in it; and kube play's pods stop their infra
        # as soon as no container is "running" (one being stopped does not count), so one
        # container (the metrics-proxy, whose stop is irrelevant here) is stopped afterwards.
        grace = str(variants.load(pods.APP_POD)[0]["spec"]["terminationGracePeriodSeconds"])
        together = [f"{pod.name}-{name}" for name in ("nginx", SHIPPER, "config-fetcher")]
        engine("stop", "--time", grace, *together, timeout=120)
        engine("stop", "--time", grace, f"{pod.name}-metrics-proxy", timeout=120)
        shipper_log = engine.logs(f"{pod.name}-{SHIPPER}")
        codes = {name: engine.inspect(name)["State"]["ExitCode"] for name in together}
        print(f"shipper log:\n{shipper_log}\nexit codes: {codes}")
    finally:
        engine.down(pod.name)
    got = [e for e in receivers.http.lines() if marker in e["line"]]
    wanted = [f"GET /?e2e={marker}-{i:04d} HTTP/1.1" for i in range(BURST)]
    assert sorted(e["fields"]["request"] for e in got) == wanted, shipper_log[-3000:]
    assert codes[f"{pod.name}-{SHIPPER}"] == 0, shipper_log[-3000:]
    assert '"drained: every line' in shipper_log, shipper_log[-3000:]

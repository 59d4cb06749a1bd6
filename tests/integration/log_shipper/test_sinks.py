"""Loki auth and tenant, HTTPS and redirects, stdout as JSON lines, health endpoints: against
real processes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from tests.integration.log_shipper.shipper import Shipper
from tests.support.fake_loki import FakeLoki
from tests.support.ndjson_receiver import Receiver
from tests.support.procs import http_get, wait_until

pytestmark = pytest.mark.integration


def write(path, start: int, stop: int) -> None:
    with open(path, "a") as out:
        out.writelines(f"entry {i}\n" for i in range(start, stop))


@pytest.mark.parametrize(
    ("loki_flags", "shipper_flags"),
    [
        (("--tenant", "team-a", "--basic", "u:p"),
         ("--loki-tenant", "team-a", "--loki-username", "u", "--loki-password", "p")),
        (("--bearer", "tok"), ("--loki-bearer-token", "tok")),
    ],
    ids=["tenant+basic", "bearer"],
)  # fmt: skip
def test_loki_tenant_and_auth(tmp_path, shippers, loki_flags, shipper_flags):
    loki = FakeLoki(tmp_path / "loki", *loki_flags).start()
    try:
        log = tmp_path / "app.log"
        write(log, 0, 50)
        shipper = Shipper(
            tmp_path / "s", "--paths", str(log), "--sink", f"loki={loki.url}",
            "--batch-wait", "100ms", *shipper_flags,
        )  # fmt: skip
        shippers.append(shipper.start())
        wait_until(lambda: loki.stats()["entries"] == 50, timeout=30, what="50 entries")
        assert loki.stats()["rejected_requests"] == 0
    finally:
        loki.stop()


def test_loki_wrong_credentials_are_dropped_and_counted(tmp_path, shippers):
    loki = FakeLoki(tmp_path / "loki", "--bearer", "right").start()
    try:
        log = tmp_path / "app.log"
        write(log, 0, 5)
        shipper = Shipper(
            tmp_path / "s", "--paths", str(log), "--sink", f"loki={loki.url}",
            "--batch-wait", "100ms", "--loki-bearer-token", "s3cr3t-T0ken",
        )  # fmt: skip
        shippers.append(shipper.start())
        wait_until(
            lambda: shipper.metric("log_shipper_dropped_lines_total", reason="http_401") == 5,
            timeout=30,
            what="drop counted",
        )
        assert loki.stats()["entries"] == 0
        assert "s3cr3t-T0ken" not in shipper.metrics() + shipper.output()
    finally:
        loki.stop()


def test_stdout_sink_writes_json_lines_between_log_lines(tmp_path, shippers):
    log = tmp_path / "access.log"
    write(log, 0, 2000)
    shipper = Shipper(
        tmp_path / "s", "--paths", str(log), "--sink", "stdout", "--batch-wait", "100ms"
    )
    shippers.append(shipper.start())
    wait_until(
        lambda: shipper.metric("log_shipper_shipped_lines_total") == 2000, what="2000 shipped"
    )
    assert shipper.terminate() == 0
    objects = [json.loads(line) for line in shipper.output().splitlines()]  # all valid JSON
    shipped = [o["line"] for o in objects if "line" in o]
    assert shipped == [f"entry {i}" for i in range(2000)]
    assert any(o.get("msg") == "shipping" for o in objects), "its own logs are there too"


def test_health_and_readiness(tmp_path, shippers, receiver):
    log = tmp_path / "app.log"
    shipper = Shipper(tmp_path / "s", "--paths", str(log), "--sink", f"http={receiver.url}")
    shippers.append(shipper.start())
    base = f"http://127.0.0.1:{shipper.port}"
    wait_until(lambda: http_get(base + "/readyz")[0] == 200, what="ready")
    assert http_get(base + "/healthz")[0] == 200
    metrics = shipper.metrics()
    for name in (
        "log_shipper_read_lines_total", "log_shipper_shipped_lines_total",
        "log_shipper_dropped_lines_total", "log_shipper_retries_total",
        "log_shipper_send_duration_seconds", "log_shipper_queue_bytes", "log_shipper_sink_up",
        "log_shipper_lag_bytes", "log_shipper_last_success_timestamp_seconds",
    ):  # fmt: skip
        assert name in metrics or name == "log_shipper_dropped_lines_total", name


@pytest.fixture
def tls_receiver(tmp_path: Path) -> Iterator[tuple[Receiver, Path]]:
    """An HTTPS NDJSON receiver whose certificate a test CA signed; yields it and the CA file."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    root = tmp_path / "tls"
    root.mkdir()
    cert_file, key_file, ca_file = root / "cert.pem", root / "key.pem", root / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    made = Receiver(root / "receiver", tls=(cert_file, key_file)).start()
    try:
        yield made, ca_file
    finally:
        made.stop()


def test_http_sink_over_https_verifies_with_ca_file(tmp_path, shippers, tls_receiver):
    receiver, ca_file = tls_receiver
    assert receiver.url.startswith("https://")
    log = tmp_path / "app.log"
    write(log, 0, 300)
    # It can never deliver: its final drain would wait out the whole default --drain-timeout.
    untrusting = Shipper(
        tmp_path / "untrusting", "--paths", str(log), "--sink", f"http={receiver.url}",
        "--batch-wait", "100ms", "--retry-max", "200ms", "--drain-timeout", "1s",
    )  # fmt: skip
    shippers.append(untrusting.start())
    trusting = Shipper(
        tmp_path / "trusting", "--paths", str(log), "--sink", f"http={receiver.url}",
        "--batch-wait", "100ms", "--ca-file", str(ca_file),
    )  # fmt: skip
    shippers.append(trusting.start())
    wait_until(lambda: receiver.stats()["lines"] == 300, timeout=30, what="300 lines over TLS")
    assert [x["line"] for x in receiver.lines()] == [f"entry {i}" for i in range(300)]
    # Without the CA the certificate is refused: retried (nothing dropped), never delivered.
    wait_until(
        lambda: untrusting.metric("log_shipper_retries_total", reason="tls") >= 2,
        timeout=30,
        what="TLS failures retried",
    )
    assert untrusting.metric("log_shipper_shipped_lines_total") == 0
    assert untrusting.metric("log_shipper_dropped_lines_total") == 0
    assert "CERTIFICATE_VERIFY_FAILED" in untrusting.output()
    assert receiver.stats()["duplicates"] == 0


def test_a_redirect_is_retried_and_logged_not_dropped(tmp_path, shippers, receiver):
    """A sink URL that redirects is a setting to correct: the batch is kept and retried, and
    the log says where the receiver points (dropping it would lose lines)."""
    receiver.control(status=308, count=3, location="https://elsewhere.example/ingest")
    log = tmp_path / "app.log"
    write(log, 0, 20)
    shipper = Shipper(
        tmp_path / "s", "--paths", str(log), "--sink", f"http={receiver.url}",
        "--batch-wait", "100ms", "--retry-max", "200ms",
    )  # fmt: skip
    shippers.append(shipper.start())
    wait_until(lambda: receiver.stats()["lines"] == 20, timeout=30, what="20 lines")
    assert receiver.stats()["faults"] == 3
    assert shipper.metric("log_shipper_retries_total", reason="http_308") == 3
    assert shipper.metric("log_shipper_dropped_lines_total") == 0
    assert "redirected to https://elsewhere.example/ingest" in shipper.output()

"""Loki auth and tenant, stdout as JSON lines, health endpoints: against real processes."""

from __future__ import annotations

import json

import pytest

from tests.integration.log_shipper.shipper import Shipper
from tests.support.fake_loki import FakeLoki
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

"""Over a real Pod's life (issue 9): nothing lost at shutdown, nothing merged across replicas,
nothing repeated in Loki after a crash, probes that hold while the sink is down.

Each test fails on the shipper before issue 9: SIGTERM delivered 1,542 of a 200,000-line backlog
and left lines written after it unread; replicas shared Idempotency-Keys and Loki streams; a
restart re-sent up to --checkpoint-interval of acknowledged Loki batches, stored again once Loki
had cut its head block; /readyz (the startupProbe) turned 503 while a sink was down.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.integration.log_shipper.load import Background, id_of, request_ids
from tests.integration.log_shipper.shipper import Shipper
from tests.support.fake_loki import FakeLoki
from tests.support.ndjson_receiver import Receiver
from tests.support.procs import http_get, wait_until

pytestmark = pytest.mark.integration

LINE = '127.0.0.1 - - [01/Dec/2026:08:00:00 +0000] "GET /?id={} HTTP/1.1" 200 6 "-" "test"\n'


def write_backlog(path: Path, count: int, start: int = 0) -> None:
    with open(path, "a") as out:
        out.writelines(LINE.format(i) for i in range(start, start + count))


def receiver_ids(receiver: Receiver) -> Counter[int | None]:
    return Counter(id_of(line["line"]) for line in receiver.lines())


def loki_ids(loki: FakeLoki, stored: bool = False) -> Counter[int | None]:
    found: Counter[int | None] = Counter()
    for stream in loki.entries(stored=stored):
        found.update(id_of(line) for _, line in stream["entries"])
    return found


def status(shipper: Shipper, path: str) -> int:
    code, _, _ = http_get(f"http://127.0.0.1:{shipper.port}{path}")
    return code


def log_lines(shipper: Shipper) -> list[dict]:
    return [json.loads(x) for x in shipper.output().splitlines() if x.startswith("{")]


# --- 1. the final drain --------------------------------------------------------------------------


def test_sigterm_with_a_200k_line_backlog_delivers_every_line(tmp_path, receiver, shippers):
    log = tmp_path / "logs" / "access.log"
    log.parent.mkdir()
    write_backlog(log, 200_000)
    drain_timeout = 30.0
    shipper = Shipper(
        tmp_path / "shipper", "--paths", str(log), "--sink", f"http={receiver.url}",
        "--drain-timeout", f"{drain_timeout:g}s",
    )  # fmt: skip
    shippers.append(shipper.start())
    started = time.monotonic()
    assert shipper.terminate(timeout=drain_timeout + 10) == 0, shipper.output()
    assert time.monotonic() - started < drain_timeout
    stats = receiver.stats()
    assert stats["lines"] == 200_000, (stats, shipper.output()[-3000:])
    assert receiver_ids(receiver) == Counter(range(200_000))
    (drained,) = [x for x in log_lines(shipper) if x["msg"].startswith("drained")]
    assert drained["undelivered_bytes"] == {f"http={receiver.url}": 0}
    # ... and checkpointed: a restart sends nothing again.
    shipper.start()
    wait_until(lambda: '"reading file"' in shipper.output().split('"started"')[-1], timeout=15)
    assert shipper.terminate() == 0
    assert receiver.stats()["batches"] == stats["batches"]


def test_sigterm_while_nginx_writes_ships_until_nginx_has_exited(
    tmp_path, nginx, receiver, shippers
):
    shipper = Shipper(
        tmp_path / "shipper", "--paths", str(nginx.access_log), "--sink", f"http={receiver.url}",
        "--drain-timeout", "60s", "--batch-wait", "100ms",
    )  # fmt: skip
    shippers.append(shipper.start())
    request_ids(nginx.port, range(0, 500))
    with Background(nginx.port, range(500, 3000)) as load:
        shipper.proc.signal(15)  # type: ignore[union-attr]  # SIGTERM while nginx is serving
        wait_until(
            lambda: "waiting for nginx to exit" in shipper.output(), timeout=15, what="waiting"
        )
        load.join()
    request_ids(nginx.port, range(3000, 3500))  # well after the shipper's SIGTERM
    assert shipper.proc.popen.poll() is None, "still reading while nginx runs"  # type: ignore[union-attr]
    nginx.app.stop()  # nginx stops; the shipper reads to the end, delivers, exits
    assert shipper.proc.wait(timeout=60) == 0  # type: ignore[union-attr]
    assert receiver_ids(receiver) == Counter(range(3500))
    assert "nginx has exited; reading the logs to their end" in shipper.output()


def test_sigterm_with_the_sink_hung_stops_at_the_deadline_and_logs_what_is_left(
    tmp_path, receiver, shippers
):
    log = tmp_path / "logs" / "access.log"
    log.parent.mkdir()
    write_backlog(log, 1000)
    shipper = Shipper(
        tmp_path / "shipper", "--paths", str(log), "--sink", f"http={receiver.url}",
        "--batch-wait", "100ms", "--drain-timeout", "3s",
    )  # fmt: skip
    shippers.append(shipper.start())
    wait_until(lambda: receiver.stats()["lines"] == 1000, timeout=30, what="first 1000")
    receiver.control(hang=True)  # the sink stops answering
    write_backlog(log, 500, start=1000)
    wait_until(lambda: receiver.stats()["requests"] >= 2, timeout=15, what="a held batch")
    started = time.monotonic()
    assert shipper.terminate(timeout=15) == 0
    assert time.monotonic() - started < 3 + 2  # the deadline, plus the process's exit
    (report,) = [x for x in log_lines(shipper) if x["msg"].startswith("drain deadline reached")]
    left = sum(len(LINE.format(i)) for i in range(1000, 1500))
    assert report["undelivered_bytes"] == {f"http={receiver.url}": left}
    receiver.control(hang=False)
    # ... and they are still on the volume for the next start: shipped then, once.
    shipper.start()
    wait_until(lambda: receiver.stats()["lines"] >= 1500, timeout=30, what="the rest")
    assert receiver_ids(receiver) == Counter(range(1500))


def test_nginx_that_never_stops_holds_the_drain_only_until_its_deadline(
    tmp_path, nginx, receiver, shippers
):
    shipper = Shipper(
        tmp_path / "shipper", "--paths", str(nginx.access_log), "--sink", f"http={receiver.url}",
        "--drain-timeout", "3s", "--batch-wait", "100ms",
    )  # fmt: skip
    shippers.append(shipper.start())
    request_ids(nginx.port, range(0, 300))
    started = time.monotonic()
    assert shipper.terminate(timeout=15) == 0
    assert time.monotonic() - started < 3 + 2
    (report,) = [x for x in log_lines(shipper) if x["msg"].startswith("drain deadline reached")]
    assert report["nginx_still_running"] is True
    # Shipping went on while waiting: what nginx had written is delivered all the same.
    assert report["undelivered_bytes"] == {f"http={receiver.url}": 0}
    assert receiver_ids(receiver) == Counter(range(300))


# --- 2. replicas ---------------------------------------------------------------------------------


def test_replicas_with_identical_files_are_both_kept(tmp_path, receiver, loki, shippers):
    """Two replicas whose logs are byte for byte the same (here: the very same file, as both
    Pods name it /var/log/nginx/access.log) into one de-duplicating receiver and one Loki."""
    log = tmp_path / "logs" / "access.log"
    log.parent.mkdir()
    write_backlog(log, 300)
    for pod in ("web-a", "web-b"):
        shipper = Shipper(
            tmp_path / pod, "--paths", str(log), "--batch-wait", "100ms",
            "--sink", f"http={receiver.url}", "--sink", f"loki={loki.url}",
            env={"POD_NAME": pod, "POD_NAMESPACE": "shop", "HOSTNAME": "same-host"},
        )  # fmt: skip
        shippers.append(shipper.start())
    wait_until(lambda: receiver.stats()["lines"] >= 600, timeout=30, what="600 lines")
    wait_until(lambda: loki.stats()["entries"] >= 600, timeout=30, what="600 Loki entries")
    assert receiver_ids(receiver) == Counter({i: 2 for i in range(300)})
    assert receiver.stats()["duplicates"] == 0
    assert loki_ids(loki) == Counter({i: 2 for i in range(300)})
    assert loki.stats()["metric_entries"] == 600 and loki.stats()["duplicates"] == 0
    labels = sorted((s["labels"]["pod"], s["labels"]["namespace"]) for s in loki.entries())
    assert labels == [("web-a", "shop"), ("web-b", "shop")]


# --- 3. Loki without repeats -------------------------------------------------------------------


def test_sigkill_and_restart_with_loki_metric_count_equals_line_count(tmp_path, loki, shippers):
    """Killed with a push held unanswered (so the kill cannot split a batch that Loki stored),
    after shipping at full speed: every acknowledged batch must be on record, or the restart
    sends it again, and Loki, whose head block has long been cut, stores it a second time."""
    log = tmp_path / "logs" / "access.log"
    log.parent.mkdir()
    total = 400_000
    write_backlog(log, total)
    shipper = Shipper(
        tmp_path / "shipper", "--paths", str(log), "--sink", f"loki={loki.url}",
        "--batch-bytes", "64KiB", "--checkpoint-interval", "5s", "--retry-max", "1s",
    )  # fmt: skip
    shippers.append(shipper.start())
    for round_ in (1, 2):
        wait_until(
            lambda r=round_: loki.stats()["entries"] >= r * 30_000, timeout=60, what="progress"
        )
        held = loki.stats()["held"]
        loki.control(hang=True)
        wait_until(
            lambda h=held: loki.stats()["held"] > h, timeout=15, what=f"a push held: {loki.stats()}"
        )
        shipper.kill()
        loki.control(hang=False)
        shipper.start()
    wait_until(lambda: loki.stats()["entries"] >= total, timeout=120, what="every line")
    stats = loki.stats()
    assert stats["head_cuts"] > 10, stats  # the re-sends came long after a cut: Loki stores them
    assert stats["entries"] == total, stats  # what a log query returns
    assert stats["metric_entries"] == total, stats  # what count_over_time counts
    assert stats["stored_repeats"] == 0, stats
    assert loki_ids(loki, stored=True) == Counter(range(total))


# --- 4. probes with the sink down ---------------------------------------------------------------


def test_restart_with_a_backlog_and_the_sink_down_passes_its_probes(tmp_path, shippers):
    log = tmp_path / "logs" / "access.log"
    log.parent.mkdir()
    receiver = Receiver(tmp_path / "receiver").start()
    try:
        write_backlog(log, 1000)
        flags = (
            "--paths", str(log), "--batch-wait", "100ms", "--retry-initial", "100ms",
            "--retry-max", "500ms", "--send-timeout", "1s", "--stale-after", "2s",
        )  # fmt: skip
        shipper = Shipper(tmp_path / "shipper", *flags, "--sink", f"http={receiver.url}")
        shippers.append(shipper.start())
        wait_until(lambda: receiver.stats()["lines"] == 1000, timeout=30, what="first 1000")
        shipper.kill()
        receiver.stop()  # the sink goes down; the shipper restarts with a backlog on disk
        write_backlog(log, 4000, start=1000)
        shipper.start()
        # startupProbe (/readyz): started = state loaded; the sink's outage does not matter.
        wait_until(lambda: status(shipper, "/readyz") == 200, timeout=10, what="/readyz 200")
        sink = f"http={receiver.url}"
        # Longer than --stale-after, with sends failing all along: both probes stay 200.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            assert status(shipper, "/readyz") == 200
            assert status(shipper, "/healthz") == 200
            time.sleep(0.2)
        assert shipper.metric("log_shipper_retries_total", sink=sink) >= 5
        assert shipper.metric("log_shipper_sink_up", sink=sink) == 0  # the sink's health: a metric
        receiver.start()  # same port, same data directory: it remembers the first 1000
        wait_until(lambda: receiver.stats()["lines"] >= 5000, timeout=30, what="the backlog")
        assert receiver_ids(receiver) == Counter(range(5000))
        assert shipper.metric("log_shipper_sink_up", sink=sink) == 1
    finally:
        receiver.stop()

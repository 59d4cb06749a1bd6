"""The syslog and RELP sinks against a real rsyslogd (imtcp, imtcp over TLS, imrelp)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from sidecars.log_shipper.sinks.base import Record, SinkError
from sidecars.log_shipper.sinks.relp import RelpSink
from sidecars.log_shipper.sinks.syslog import SyslogSink
from sidecars.runtime.backoff import Backoff, Deadline
from tests.integration.log_shipper.load import Background, id_of, request_ids
from tests.integration.log_shipper.shipper import Shipper
from tests.support.procs import free_port, wait_until
from tests.support.rsyslog import Received, Rsyslog, have_module, have_rsyslog

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not have_rsyslog(), reason="rsyslogd is not installed (Debian rsyslog)"),
    pytest.mark.skipif(not have_module("imrelp"), reason="imrelp missing (Debian rsyslog-relp)"),
]

BASE_NS = 1_795_499_519_401_000_000  # 2026-11-24T05:51:59.401Z
PATH = "/var/log/nginx/access.log"


def records(lines: Sequence[str], *, start: int = 0, fingerprint: str = "fp-a") -> list[Record]:
    out, offset = [], start
    for i, line in enumerate(lines):
        size = len(line.encode("utf-8", "surrogateescape")) + 1
        out.append(Record(line, None, PATH, fingerprint, offset, offset + size, BASE_NS + i))
        offset += size
    return out


def numbered(count: int, start: int = 0) -> list[str]:
    return [
        f'10.0.0.{i % 250} - - [24/Nov/2026:05:51:59 +0000] "GET /item/{i} HTTP/1.1" 200 {i}'
        for i in range(start, start + count)
    ]


def batches(items: list[Record], size: int) -> list[list[Record]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


async def deliver(sink: RelpSink | SyslogSink, chunks: list[list[Record]], limit: float = 60):
    """What the pipeline does: send each batch until acknowledged, retrying with backoff."""
    deadline, backoff, retries = Deadline(limit), Backoff(initial=0.02, cap=0.5), 0
    for chunk in chunks:
        attempt = 0
        while True:
            try:
                await sink.send(chunk)
                break
            except SinkError as exc:
                assert exc.retryable, exc.reason
                assert not deadline.expired(), f"still failing: {exc.reason}"
                retries += 1
                await asyncio.sleep(backoff.delay(attempt))
                attempt += 1
    return retries


@pytest.fixture
def rsyslog(tmp_path: Path) -> Iterator[Rsyslog]:
    server = Rsyslog(tmp_path / "rsyslog")
    server.root.mkdir()
    try:
        yield server.start()
    finally:
        server.stop()


def msgs(received: list[Received]) -> list[bytes]:
    return [r.msg for r in received]


# --- syslog over TCP ----------------------------------------------------------------------------


async def test_syslog_tcp_delivers_rfc5424_in_order(rsyslog: Rsyslog) -> None:
    lines = numbered(2000)
    sink = SyslogSink(f"tcp://127.0.0.1:{rsyslog.tcp_port}", hostname="web-0", procid="7")
    await sink.start()
    try:
        await deliver(sink, batches(records(lines), 300))
    finally:
        await sink.close()
    got = await asyncio.to_thread(rsyslog.wait_for_count, len(lines))
    assert msgs(got) == [line.encode() for line in lines]
    first = got[0]
    assert (first.hostname, first.app_name, first.procid, first.msgid) == (
        "web-0",
        "nginx",
        "7",
        "access",
    )
    assert first.timestamp.startswith("2026-11-24T05:51:59.401")
    assert first.structured_data == "-"


async def test_syslog_structured_data_reaches_rsyslog(rsyslog: Rsyslog) -> None:
    record = Record('GET "/" 200', {"status": "200", "q": 'a"b]c\\'}, PATH, "fp-x", 42, 55, BASE_NS)
    sink = SyslogSink(f"tcp://127.0.0.1:{rsyslog.tcp_port}", structured_data=True)
    try:
        await sink.send([record])
    finally:
        await sink.close()
    (got,) = await asyncio.to_thread(rsyslog.wait_for_count, 1)
    assert got.structured_data == (
        f'[file@32473 path="{PATH}" fp="fp-x" offset="42"]'
        '[nginx@32473 status="200" q="a\\"b\\]c\\\\"]'
    )
    assert got.msg == b'GET "/" 200'


HOSTILE = [
    "caf\u00e9 \ufffd replaced invalid UTF-8",
    "raw bytes kept by surrogateescape: \udcff\udcfe end",
    "tab\tseparated\tfields and a NUL-free control \x01",
    "123 looks like a frame length",
    "x" * (1024 * 1024),  # 1 MiB: far beyond one TCP segment and rsyslog's 8 KiB default
    "",
    "after the long ones",
]


def expected_bytes(line: str) -> bytes:
    return line.encode("utf-8", "surrogateescape")


@pytest.mark.parametrize("kind", ["syslog", "relp"])
async def test_invalid_utf8_and_long_lines_survive_framing(rsyslog: Rsyslog, kind: str) -> None:
    sink: SyslogSink | RelpSink
    if kind == "syslog":
        sink = SyslogSink(f"tcp://127.0.0.1:{rsyslog.tcp_port}")
    else:
        sink = RelpSink(f"127.0.0.1:{rsyslog.relp_port}", window=4)
    lines = HOSTILE + numbered(50)
    try:
        await deliver(sink, [records(lines)])
    finally:
        await sink.close()
    got = await asyncio.to_thread(rsyslog.wait_for_count, len(lines))
    assert len(got) == len(lines)
    for line, message in zip(lines, msgs(got), strict=True):
        assert message == expected_bytes(line), line[:60]


async def test_syslog_reconnects_after_rsyslog_restart_between_batches(rsyslog: Rsyslog) -> None:
    sink = SyslogSink(f"tcp://127.0.0.1:{rsyslog.tcp_port}")
    first, second = numbered(100), numbered(100, start=100)
    try:
        await deliver(sink, [records(first)])
        await asyncio.to_thread(rsyslog.wait_for_count, 100)
        await asyncio.to_thread(rsyslog.stop)
        await asyncio.to_thread(rsyslog.start)
        # The old connection is dead; the sink must notice before writing into it.
        await deliver(sink, [records(second, start=10_000)])
    finally:
        await sink.close()
    got = await asyncio.to_thread(rsyslog.wait_for_count, 200)
    assert msgs(got) == [line.encode() for line in first + second]


async def test_syslog_receiver_down_is_a_retryable_error(tmp_path: Path) -> None:
    server = Rsyslog(tmp_path)
    sink = SyslogSink(f"tcp://127.0.0.1:{server.tcp_port}", timeout=2)
    await sink.start()  # not fatal while the receiver is down
    with pytest.raises(SinkError) as info:
        await sink.send(records(["x"]))
    assert info.value.retryable
    assert f"127.0.0.1:{server.tcp_port}" in info.value.reason
    try:
        await asyncio.to_thread(server.start)
        await deliver(sink, [records(["x"])])
        got = await asyncio.to_thread(server.wait_for_count, 1)
        assert msgs(got) == [b"x"]
    finally:
        await sink.close()
        server.stop()


# --- syslog over TLS ----------------------------------------------------------------------------


@pytest.fixture
def tls_rsyslog(tmp_path: Path) -> Iterator[tuple[Rsyslog, Path, Path]]:
    if not have_module("lmnsd_ossl"):
        pytest.skip("rsyslog's OpenSSL driver is missing (Debian rsyslog-openssl)")
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    root = tmp_path / "tls"
    root.mkdir()
    ca_file, cert_file, key_file = root / "ca.pem", root / "cert.pem", root / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    other = trustme.CA()
    wrong_ca = root / "other-ca.pem"
    other.cert_pem.write_to_path(str(wrong_ca))
    server = Rsyslog(root, tls_port=free_port(), tls_files=(ca_file, cert_file, key_file))
    try:
        yield server.start(), ca_file, wrong_ca
    finally:
        server.stop()


async def test_syslog_tls_with_ca_file(tls_rsyslog: tuple[Rsyslog, Path, Path]) -> None:
    server, ca_file, _ = tls_rsyslog
    lines = numbered(500)
    sink = SyslogSink(f"tls://127.0.0.1:{server.tls_port}", ca_file=str(ca_file))
    try:
        await deliver(sink, batches(records(lines), 100))
    finally:
        await sink.close()
    got = await asyncio.to_thread(server.wait_for_count, len(lines))
    assert msgs(got) == [line.encode() for line in lines]


async def test_syslog_tls_rejects_a_server_the_ca_did_not_sign(
    tls_rsyslog: tuple[Rsyslog, Path, Path],
) -> None:
    server, _, wrong_ca = tls_rsyslog
    sink = SyslogSink(f"tls://127.0.0.1:{server.tls_port}", ca_file=str(wrong_ca), timeout=5)
    try:
        with pytest.raises(SinkError, match="TLS verification failed") as info:
            await sink.send(records(["secret"]))
        assert info.value.retryable
    finally:
        await sink.close()
    assert server.received() == []


# --- RELP -------------------------------------------------------------------------------------


async def test_relp_every_record_exactly_once_in_order(rsyslog: Rsyslog) -> None:
    lines = numbered(20_000)
    sink = RelpSink(f"127.0.0.1:{rsyslog.relp_port}", hostname="web-1", window=128)
    await sink.start()
    try:
        retries = await deliver(sink, batches(records(lines), 700))
    finally:
        await sink.close()
    assert retries == 0
    # RELP acknowledged everything before send() returned: no waiting needed.
    got = rsyslog.received()
    assert msgs(got) == [line.encode() for line in lines]
    assert {(r.hostname, r.app_name, r.msgid) for r in got} == {("web-1", "nginx", "access")}


@pytest.mark.parametrize("how", ["restart", "kill"])
async def test_relp_rsyslog_restarted_mid_stream_loses_nothing(rsyslog: Rsyslog, how: str) -> None:
    lines = numbered(30_000)
    sink = RelpSink(f"127.0.0.1:{rsyslog.relp_port}", window=64, timeout=5)
    sending = asyncio.create_task(deliver(sink, batches(records(lines), 500), limit=90))
    try:
        await asyncio.to_thread(rsyslog.wait_for_count, 5_000)
        await asyncio.to_thread(rsyslog.kill if how == "kill" else rsyslog.stop)
        await asyncio.to_thread(rsyslog.start)
        retries = await sending
    finally:
        sending.cancel()
        await sink.close()
    assert retries >= 1, "the outage was not noticed"
    got = msgs(rsyslog.received())
    counts = Counter(got)
    expected = [line.encode() for line in lines]
    assert set(counts) == set(expected), "lost records"
    # Only what was received but not yet acknowledged at the break may repeat.
    assert sum(counts.values()) - len(expected) <= 64
    first_seen = list(dict.fromkeys(got))
    assert first_seen == expected


async def test_relp_server_down_then_up(tmp_path: Path) -> None:
    server = Rsyslog(tmp_path)
    sink = RelpSink(f"127.0.0.1:{server.relp_port}", timeout=2)
    await sink.start()
    with pytest.raises(SinkError, match="RELP connect") as info:
        await sink.send(records(["a"]))
    assert info.value.retryable
    try:
        await asyncio.to_thread(server.start)
        await deliver(sink, [records(["a", "b"])])
        assert msgs(server.received()) == [b"a", b"b"]
    finally:
        await sink.close()
        server.stop()


async def test_relp_against_a_plain_syslog_port_fails_cleanly(rsyslog: Rsyslog) -> None:
    # imtcp is not RELP: it never answers "open", so the session times out, retryably.
    sink = RelpSink(f"127.0.0.1:{rsyslog.tcp_port}", timeout=1)
    try:
        with pytest.raises(SinkError, match="no RELP answer to open") as info:
            await sink.send(records(["a"]))
        assert info.value.retryable
    finally:
        await sink.close()


# --- the whole log-shipper: real nginx -> python -m sidecars log-shipper -> rsyslogd ----------


def shipped(server: Rsyslog, input_name: str) -> Counter[int | None]:
    return Counter(id_of(r.msg.decode()) for r in server.received() if r.input == input_name)


def test_nginx_to_rsyslog_over_relp_and_syslog_exactly_once_in_order(
    tmp_path: Path, nginx, rsyslog: Rsyslog, shippers
) -> None:
    n = 2000
    shipper = Shipper(
        tmp_path / "shipper",
        "--paths", str(nginx.access_log),
        "--sink", f"relp=127.0.0.1:{rsyslog.relp_port}",
        "--sink", f"syslog=tcp://127.0.0.1:{rsyslog.tcp_port}",
        "--hostname", "web-0",
        "--batch-wait", "100ms",
    )  # fmt: skip
    shippers.append(shipper.start())
    request_ids(nginx.port, range(n))
    wait_until(
        lambda: (
            sum(shipped(rsyslog, "imrelp").values()) >= n
            and sum(shipped(rsyslog, "imtcp").values()) >= n
        ),
        timeout=60,
        what=f"{n} lines over RELP and syslog",
    )
    for input_name in ("imrelp", "imtcp"):
        got = [r for r in rsyslog.received() if r.input == input_name]
        assert [id_of(r.msg.decode()) for r in got] == list(range(n)), input_name
        assert {(r.hostname, r.app_name, r.msgid) for r in got} == {("web-0", "nginx", "access")}
    assert shipper.metric("log_shipper_sink_up") == 2
    assert shipper.terminate() == 0


def test_shipper_sigkilled_mid_stream_relp_loses_nothing(
    tmp_path: Path, nginx, rsyslog: Rsyslog, shippers
) -> None:
    n, kills = 6000, 3
    shipper = Shipper(
        tmp_path / "shipper",
        "--paths", str(nginx.access_log),
        "--sink", f"relp=127.0.0.1:{rsyslog.relp_port}",
        "--batch-bytes", "64KiB",
        "--batch-wait", "100ms",
        # RELP cannot de-duplicate: what was acknowledged but not yet checkpointed at a crash
        # is sent again, so keep that window short.
        "--checkpoint-interval", "50ms",
    )  # fmt: skip
    shippers.append(shipper.start())
    with Background(nginx.port, range(n)) as load:
        for kill in range(1, kills + 1):
            wait_until(
                lambda k=kill: sum(shipped(rsyslog, "imrelp").values()) >= k * n // (kills + 1),
                timeout=60,
                what="progress before the next SIGKILL",
            )
            shipper.kill()
            shipper.start()
        load.join()
    wait_until(lambda: set(shipped(rsyslog, "imrelp")) >= set(range(n)), timeout=60, what="all")
    got = shipped(rsyslog, "imrelp")
    assert set(got) == set(range(n)), "lost lines"
    # Only what was in flight at each kill may repeat: the batches being sent or acknowledged
    # but not yet checkpointed (a few 64 KiB batches at most).
    batch_lines = 64 * 1024 * n // nginx.access_log.stat().st_size
    repeated = sum(got.values()) - n
    assert repeated <= kills * 3 * batch_lines, (repeated, batch_lines)
    assert shipper.terminate() == 0


def test_relp_after_sigkill_only_the_batch_in_flight_repeats(
    tmp_path: Path, rsyslog: Rsyslog, shippers
) -> None:
    """RELP cannot de-duplicate, so each acknowledged batch is checkpointed before the next one
    is sent: a SIGKILL repeats at most the batch in flight, however long the periodic
    --checkpoint-interval (30 s here, longer than the whole test)."""
    n, kills, size = 100_000, 4, 100
    log = tmp_path / "logs" / "access.log"
    log.parent.mkdir()
    with open(log, "w") as out:
        for i in range(n):
            head = f'10.0.0.1 - - [24/Nov/2026:05:51:59 +0000] "GET /?id={i} HTTP/1.1" 200 '
            out.write(head.ljust(size - 1, "x") + "\n")
    batch_bytes = 64 * 1024
    lines_per_batch = -(-batch_bytes // size)  # cut at the first line boundary at or past it
    shipper = Shipper(
        tmp_path / "shipper",
        "--paths", str(log),
        "--sink", f"relp=127.0.0.1:{rsyslog.relp_port}",
        "--batch-bytes", str(batch_bytes),
        "--checkpoint-interval", "30s",
    )  # fmt: skip
    shippers.append(shipper.start())
    for kill in range(1, kills + 1):
        wait_until(
            lambda k=kill: len(rsyslog.raw_lines()) >= k * n // (kills + 1),
            timeout=60,
            what="progress before the next SIGKILL",
        )
        shipper.kill()
        shipper.start()
    wait_until(lambda: len(set(shipped(rsyslog, "imrelp"))) >= n, timeout=60, what="all lines")
    got = shipped(rsyslog, "imrelp")
    assert set(got) == set(range(n)), "lost lines"
    repeated = sum(got.values()) - n
    assert repeated <= kills * lines_per_batch, (repeated, lines_per_batch)
    assert shipper.terminate() == 0

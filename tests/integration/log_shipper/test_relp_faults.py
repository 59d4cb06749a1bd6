"""RELP sink faults rsyslog cannot be made to produce on demand, from a scripted RELP server on
127.0.0.1: "rsp 500", serverclose mid-batch, garbage, silence; the txnr sequence and the window.
(Delivery into the real rsyslog is tests/integration/log_shipper/test_syslog_relp.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from sidecars.log_shipper.sinks.base import Record, SinkError
from sidecars.log_shipper.sinks.relp import RelpSink
from sidecars.log_shipper.sinks.relp_frames import Frame, FrameParser, encode_frame

pytestmark = pytest.mark.integration

HELLO = b"200 OK\nrelp_version=0\nrelp_software=scripted\ncommands=syslog"

# Decides the answer to a syslog frame: bytes to send (an rsp frame or anything else), None
# to hold the answer, or "close" to drop the connection.
Policy = Callable[["Script", Frame], bytes | str | None]


def ok(_: Script, frame: Frame) -> bytes:
    return encode_frame(frame.txnr, "rsp", b"200 OK")


@dataclass
class Script:
    policy: Policy = ok
    hello: bytes = HELLO
    sessions: list[list[Frame]] = field(default_factory=list)  # client frames per connection
    held: list[Frame] = field(default_factory=list)
    max_in_flight: int = 0
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    def syslog_lines(self) -> list[bytes]:
        return [
            f.data.split(b" access - ", 1)[1]
            for session in self.sessions
            for f in session
            if f.command == "syslog"
        ]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        frames: list[Frame] = []
        self.sessions.append(frames)
        parser = FrameParser()
        try:
            while data := await reader.read(65536):
                for frame in parser.feed(data):
                    frames.append(frame)
                    if frame.command == "open":
                        writer.write(encode_frame(frame.txnr, "rsp", self.hello))
                    elif frame.command == "close":
                        writer.write(encode_frame(frame.txnr, "rsp", b"200 OK"))
                    else:
                        self.held.append(frame)
                        self.max_in_flight = max(self.max_in_flight, len(self.held))
                        answer = self.policy(self, frame)
                        if answer == "close":
                            writer.close()
                            return
                        if answer is not None:
                            assert isinstance(answer, bytes)
                            self.held.remove(frame)
                            writer.write(answer)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def relp_server() -> AsyncIterator[tuple[Script, int]]:
    script = Script()
    server = await asyncio.start_server(script.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield script, port
    finally:
        server.close()
        for writer in script.writers:
            writer.close()
        await server.wait_closed()


def records(count: int) -> list[Record]:
    return [
        Record(f"line {i}", None, "/l/access.log", "fp", i * 10, i * 10 + 9, i)
        for i in range(count)
    ]


async def test_txnr_sequence_open_and_close(relp_server: tuple[Script, int]) -> None:
    script, port = relp_server
    sink = RelpSink(f"127.0.0.1:{port}", hostname="h")
    await sink.send(records(5))
    await sink.close()
    (session,) = script.sessions
    assert [(f.txnr, f.command) for f in session] == [
        (1, "open"),
        (2, "syslog"),
        (3, "syslog"),
        (4, "syslog"),
        (5, "syslog"),
        (6, "syslog"),
        (7, "close"),
    ]
    assert b"commands=syslog" in session[0].data
    assert session[1].data.startswith(b"<190>1 1970-01-01T00:00:00.000000Z h nginx - access - ")


async def test_window_bounds_messages_in_flight(relp_server: tuple[Script, int]) -> None:
    script, port = relp_server

    def answer_when_window_full(s: Script, frame: Frame) -> bytes | None:
        # Hold answers until 8 are waiting: the sink must stop at its window of 8.
        if len(s.held) < 8:
            return None
        answers = b"".join(encode_frame(f.txnr, "rsp", b"200 OK") for f in s.held[:-1])
        s.held[:-1] = []
        return answers + encode_frame(frame.txnr, "rsp", b"200 OK")

    script.policy = answer_when_window_full
    sink = RelpSink(f"127.0.0.1:{port}", window=8, timeout=5)
    try:
        await sink.send(records(64))
    finally:
        await sink.close()
    assert script.max_in_flight == 8
    assert script.syslog_lines() == [f"line {i}".encode() for i in range(64)]


async def test_rsp_500_fails_the_batch_and_the_retry_skips_what_was_acknowledged(
    relp_server: tuple[Script, int],
) -> None:
    script, port = relp_server
    refused = {b"line 3"}

    def refuse_line_3_once(_: Script, frame: Frame) -> bytes:
        if frame.data.endswith(b" line 3") and refused:
            refused.clear()
            return encode_frame(frame.txnr, "rsp", b"500 queue full")
        return encode_frame(frame.txnr, "rsp", b"200 OK")

    script.policy = refuse_line_3_once
    sink = RelpSink(f"127.0.0.1:{port}", window=2)
    batch = records(6)
    with pytest.raises(SinkError, match="500 queue full") as info:
        await sink.send(batch)
    assert info.value.retryable
    assert "(5/6 acknowledged)" in info.value.reason
    await sink.send(batch)  # the pipeline's retry of the same batch
    await sink.close()
    assert len(script.sessions) == 2  # the failed session was dropped
    lines = script.syslog_lines()
    assert lines.count(b"line 3") == 2
    assert sorted(set(lines)) == sorted(f"line {i}".encode() for i in range(6))
    assert len(lines) == 7  # only line 3 was sent twice


async def test_serverclose_mid_batch_is_retryable(relp_server: tuple[Script, int]) -> None:
    script, port = relp_server
    seen: list[int] = []

    def close_after_three(s: Script, frame: Frame) -> bytes | str:
        seen.append(frame.txnr)
        if len(seen) == 4:
            return encode_frame(0, "serverclose")
        return encode_frame(frame.txnr, "rsp", b"200 OK")

    script.policy = close_after_three
    sink = RelpSink(f"127.0.0.1:{port}", window=1)
    batch = records(6)
    with pytest.raises(SinkError, match="serverclose") as info:
        await sink.send(batch)
    assert info.value.retryable
    await sink.send(batch)
    await sink.close()
    second = [f for f in script.sessions[1] if f.command == "syslog"]
    # Lines 0-2 were acknowledged and are not repeated; line 3 was never answered.
    assert [f.data.rsplit(b" ", 1)[1] for f in second] == [b"3", b"4", b"5"]
    assert second[0].txnr == 2  # a new session starts its txnr sequence again


async def test_dropped_connection_is_retryable(relp_server: tuple[Script, int]) -> None:
    script, port = relp_server
    script.policy = lambda s, f: "close"
    sink = RelpSink(f"127.0.0.1:{port}", timeout=5)
    with pytest.raises(SinkError, match=r"closed by the RELP server|connection lost") as info:
        await sink.send(records(3))
    assert info.value.retryable
    await sink.close()


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", "not a RELP frame"),
        (b"99 rsp 6 200 OK\n", "rsp for unknown txnr 99"),
        (b"2 syslog 1 x\n", "unexpected RELP command from server: 'syslog'"),
        (b"2 rsp 2 OK\n", "3-digit code"),
    ],
)
async def test_garbage_from_the_server_is_retryable(
    relp_server: tuple[Script, int], answer: bytes, message: str
) -> None:
    script, port = relp_server
    script.policy = lambda s, f: answer
    sink = RelpSink(f"127.0.0.1:{port}", timeout=5)
    with pytest.raises(SinkError, match=message) as info:
        await sink.send(records(1))
    assert info.value.retryable
    await sink.close()


async def test_silent_server_times_out(relp_server: tuple[Script, int]) -> None:
    script, port = relp_server
    script.policy = lambda s, f: None
    sink = RelpSink(f"127.0.0.1:{port}", timeout=0.5)
    with pytest.raises(SinkError, match=r"no RELP acknowledgement within 0\.5s") as info:
        await sink.send(records(3))
    assert info.value.retryable
    await sink.close()


@pytest.mark.parametrize(
    ("hello", "message"),
    [
        (b"500 go away", "refused the session: 500 go away"),
        (
            b"200 OK\nrelp_version=0\ncommands=other",
            "refused the session: 200 OK, commands='other'",
        ),
        (b"OK", "3-digit code"),
    ],
)
async def test_open_refused(relp_server: tuple[Script, int], hello: bytes, message: str) -> None:
    script, port = relp_server
    script.hello = hello
    sink = RelpSink(f"127.0.0.1:{port}", timeout=5)
    with pytest.raises(SinkError, match=message) as info:
        await sink.send(records(1))
    assert info.value.retryable
    await sink.close()
    assert script.syslog_lines() == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"url": "nohost"}, "RELP address 'nohost'"),
        ({"url": "h:1", "window": 0}, "RELP window 0 must be between"),
        ({"url": "h:1", "timeout": 0}, "RELP timeout must be greater than 0"),
        ({"url": "h:1", "app_name": "a b"}, "syslog app-name 'a b'"),
    ],
)
def test_bad_settings(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RelpSink(**kwargs)  # type: ignore[arg-type]

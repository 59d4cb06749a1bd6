"""The stub_status parser: nginx's page, variations of it, and what is not a stub_status page."""

from __future__ import annotations

import pytest

from sidecars.metrics_proxy.stub_status import StubStatus, StubStatusError, parse_stub_status

NGINX = (
    "Active connections: 291 \n"
    "server accepts handled requests\n"
    " 16630948 16630948 31070465 \n"
    "Reading: 6 Writing: 179 Waiting: 106 \n"
)
EXPECTED = StubStatus(
    active=291,
    accepted=16630948,
    handled=16630948,
    requests=31070465,
    reading=6,
    writing=179,
    waiting=106,
)


def test_nginx_page() -> None:
    assert parse_stub_status(NGINX) == EXPECTED


@pytest.mark.parametrize(
    "text",
    [
        NGINX.replace("\n", "\r\n"),  # CRLF
        NGINX.replace(" \n", "\n"),  # no trailing blanks
        NGINX.replace(" ", "  ").replace("\n", "\n\n"),  # doubled blanks, empty lines
        NGINX.replace(" ", "\t"),  # tabs
        NGINX.rstrip("\n"),  # no final newline
        NGINX.replace("Active connections: 291", "active   connections :291"),
        # Tengine adds a request_time column
        NGINX.replace("requests\n", "requests request_time\n").replace(
            "31070465 \n", "31070465 75806 \n"
        ),
        # a patched build with extra fields on the last line and an extra line
        NGINX.replace("Waiting: 106", "Waiting: 106 Closing: 3") + "Uptime: 12345\n",
        # the header without the leading "server" word
        NGINX.replace("server accepts", "accepts"),
    ],
    ids=[
        "crlf",
        "no-trailing-blank",
        "extra-blanks",
        "tabs",
        "no-final-newline",
        "case-and-colon-spacing",
        "tengine",
        "extra-fields",
        "no-server-word",
    ],
)
def test_tolerated_variations(text: str) -> None:
    assert parse_stub_status(text) == EXPECTED


def test_numbers_beyond_64_bits_are_kept() -> None:
    big = 2**70
    text = NGINX.replace("16630948 16630948", f"{big} {big}")
    assert parse_stub_status(text).accepted == big


@pytest.mark.parametrize(
    ("text", "missing"),
    [
        ("", "active connections, accepts, handled, requests, reading, writing, waiting"),
        ("<html><body>502 Bad Gateway</body></html>", "active connections"),
        (NGINX.replace("Waiting: 106 ", ""), "waiting"),
        # the numbers line does not match the header: none of the three can be trusted
        (NGINX.replace(" 16630948 16630948 31070465", " 16630948 16630948"), "accepts"),
        (NGINX.replace("Reading: 6", "Reading: six"), "reading"),
    ],
    ids=["empty", "html", "missing-field", "short-numbers-line", "not-a-number"],
)
def test_not_a_stub_status_page(text: str, missing: str) -> None:
    with pytest.raises(StubStatusError, match="not a stub_status page: missing") as info:
        parse_stub_status(text)
    assert missing in str(info.value)
    assert "\n" not in str(info.value)


def test_garbage_bytes_decoded_with_replacement_do_not_crash() -> None:
    text = bytes(range(256)).decode("utf-8", "replace") * 10
    with pytest.raises(StubStatusError):
        parse_stub_status(text)

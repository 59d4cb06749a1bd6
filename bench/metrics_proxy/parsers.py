"""Per-message parse cost of the two HTTP/1.1 parser libraries considered for runtime/server.py
and runtime/http11.py, h11 (pure Python) and httptools (llhttp, C), on both sides of a
metrics-proxy scrape: the request head a scraper sends, a stub_status answer, a 64 KiB chunked
upstream /metrics. Best of 5 timed loops.

    python -m bench.metrics_proxy.parsers      # needs h11 beside httptools: pip install h11
"""

import timeit

import h11
import httptools

REQ = (
    b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9113\r\nUser-Agent: Prometheus/2.42.0\r\n"
    b"Accept: application/openmetrics-text;version=1.0.0,"
    b"text/plain;version=0.0.4;q=0.5,*/*;q=0.1\r\n"
    b"Accept-Encoding: gzip\r\nX-Prometheus-Scrape-Timeout-Seconds: 10\r\n\r\n"
)
BODY = (
    b"Active connections: 1 \nserver accepts handled requests\n 10 10 10 \n"
    b"Reading: 0 Writing: 1 Waiting: 0 \n"
)
RESP = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Tue, 01 Dec 2026 08:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: %d\r\nConnection: keep-alive\r\n\r\n"
    % len(BODY)
    + BODY
)
BIG = b"x" * 65536
CHUNKED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
    + b"".join(b"%x\r\n%s\r\n" % (4096, BIG[:4096]) for _ in range(16))
    + b"0\r\n\r\n"
)


def h11_server():
    c = h11.Connection(h11.SERVER)
    c.receive_data(REQ)
    while True:
        e = c.next_event()
        if isinstance(e, h11.EndOfMessage) or e is h11.NEED_DATA:
            break


def h11_client(raw):
    c = h11.Connection(h11.CLIENT)
    c.send(h11.Request(method="GET", target="/stub_status", headers=[("Host", "x")]))
    c.send(h11.EndOfMessage())
    c.receive_data(raw)
    body = []
    while True:
        e = c.next_event()
        if isinstance(e, h11.Data):
            body.append(e.data)
        if isinstance(e, h11.EndOfMessage) or e is h11.NEED_DATA:
            break
    return b"".join(body)


class Sink:
    def __init__(s):
        s.h = {}
        s.b = []
        s.done = False

    def on_url(s, u):
        s.url = u

    def on_header(s, n, v):
        s.h[n.decode("latin-1").lower()] = v.decode("latin-1")

    def on_body(s, b):
        s.b.append(b)

    def on_message_complete(s):
        s.done = True


def ht_server():
    s = Sink()
    p = httptools.HttpRequestParser(s)
    p.feed_data(REQ)
    assert s.done


def ht_client(raw):
    s = Sink()
    p = httptools.HttpResponseParser(s)
    p.feed_data(raw)
    assert s.done
    return b"".join(s.b)


MESSAGES = [
    ("request head (server side), h11", h11_server),
    ("request head (server side), httptools", ht_server),
    ("stub_status response (client side), h11", lambda: h11_client(RESP)),
    ("stub_status response (client side), httptools", lambda: ht_client(RESP)),
    ("64 KiB chunked response (client side), h11", lambda: h11_client(CHUNKED)),
    ("64 KiB chunked response (client side), httptools", lambda: ht_client(CHUNKED)),
]


def main() -> None:
    assert h11_client(CHUNKED) == ht_client(CHUNKED) == BIG
    for name, fn in MESSAGES:
        n = 20000 if "64" not in name else 2000
        best = min(timeit.repeat(fn, number=n, repeat=5)) / n
        print(f"{name}: {best * 1e6:.1f} us")


if __name__ == "__main__":
    main()

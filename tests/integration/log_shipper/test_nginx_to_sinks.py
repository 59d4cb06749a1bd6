"""A real nginx under load: N requests -> exactly N access-log entries at each sink, in order."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.integration.log_shipper.load import id_of, request_ids
from tests.integration.log_shipper.shipper import Shipper
from tests.support.procs import wait_until

pytestmark = pytest.mark.integration

N = 3000


def test_n_requests_reach_http_and_loki_exactly_once_in_order(
    tmp_path, nginx, receiver, loki, shippers
):
    shipper = Shipper(
        tmp_path / "shipper",
        "--paths", str(nginx.app.log_dir / "access.log"),
        "--paths", str(nginx.app.log_dir / "error.log"),
        "--sink", f"http={receiver.url}",
        "--sink", f"loki={loki.url}",
        "--format", "sidecars",
        "--batch-wait", "200ms",
        "--loki-label", "job=nginx",
        "--loki-label", "pod=${POD_NAME}",
        env={"POD_NAME": "web-0"},
    )  # fmt: skip
    shippers.append(shipper.start())
    request_ids(nginx.port, range(N))

    def access_lines() -> list[dict]:
        return [x for x in receiver.lines() if x["file"].endswith("access.log")]

    wait_until(lambda: len(access_lines()) >= N, timeout=60, what=f"{N} lines at the receiver")
    lines = access_lines()
    ids = [id_of(x["line"]) for x in lines]
    assert Counter(ids) == Counter(range(N)), "each request exactly once"
    assert ids == sorted(ids), "in file order (one keep-alive client: log order = request order)"
    offsets = [x["offset"] for x in lines]
    assert offsets == sorted(offsets) and len(set(offsets)) == N
    assert all(x["fields"]["status"] == "200" for x in lines), "parsed by the sidecars format"
    assert receiver.stats()["gzip"] > 0

    def loki_access() -> list[list[str]]:
        for stream in loki.entries():
            if stream["labels"]["filename"].endswith("access.log"):
                return stream["entries"]
        return []

    wait_until(lambda: len(loki_access()) >= N, timeout=60, what=f"{N} entries in loki")
    stream = next(s for s in loki.entries() if s["labels"]["filename"].endswith("access.log"))
    assert stream["labels"] == {
        "job": "nginx",
        "pod": "web-0",
        "filename": str(nginx.app.log_dir / "access.log"),
    }
    entries = stream["entries"]
    assert Counter(id_of(line) for _, line in entries) == Counter(range(N))
    # timestamps order the entries as the file does (line time + offset tie-breaker)
    assert [id_of(line) for _, line in entries] == list(range(N))
    assert loki.stats()["duplicates"] == 0

    assert shipper.metric("log_shipper_shipped_lines_total") >= 2 * N
    assert shipper.metric("log_shipper_unparsed_lines_total") >= 0
    assert shipper.metric("log_shipper_sink_up") == 2
    assert shipper.terminate() == 0

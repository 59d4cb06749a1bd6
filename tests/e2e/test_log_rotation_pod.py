"""e2e-pod: the real Pod with the log-shipper rotating nginx's logs at a small size under a
minute or more of load: through the shared PID namespace (USR1 to the nginx master of another
container), the `logs` volume stays under the shipper's cap and the receiver gets every request
exactly once across all the reopens.

Only the Pod's env is changed (the podman variant's override, as in every e2e test): a small
LOG_SHIPPER_ROTATE_BYTES and LOG_SHIPPER_MAX_HELD_BYTES, and the sink.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e import pods
from tests.e2e.engine import Podman
from tests.e2e.test_log_shipper_pod import bridge_gateway, metric_samples
from tests.support.logvolume import VolumeWatch, paced_load, process_tree
from tests.support.ndjson_receiver import Receiver
from tests.support.procs import wait_until

pytestmark = [pytest.mark.e2e_pod, pytest.mark.timeout(900)]

KIB = 1024
ROTATE = 256 * KIB
CAP = 2 * 1024 * KIB
REQUESTS = 60_000
RATE = 800.0  # requests/s: 75 s of load


@pytest.fixture(scope="module")
def receiver(
    engine: Podman, origin: pods.PlayedPod, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Receiver]:
    made = Receiver(tmp_path_factory.mktemp("rotation-pod") / "http", host=bridge_gateway(engine))
    try:
        yield made.start()
    finally:
        made.stop()


@pytest.fixture(scope="module")
def app(engine: Podman, origin: pods.PlayedPod, receiver: Receiver) -> Iterator[pods.PlayedPod]:
    env = {
        "LOG_SHIPPER_SINK": f"http={receiver.url}",
        "LOG_SHIPPER_ROTATE_BYTES": str(ROTATE),
        "LOG_SHIPPER_MAX_HELD_BYTES": str(CAP),
    }
    pod = pods.play(engine, pods.APP_POD, name="sidecars-rotate", env=env)
    try:
        assert pod.play.returncode == 0, pod.play.stderr
        yield pod
    finally:
        engine.down(pod.name)


def metric(app: pods.PlayedPod, name: str, **labels: str) -> float:
    return sum(
        s.value
        for s in metric_samples(app)
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_rotation_in_the_pod_keeps_the_volume_under_the_cap_and_every_request_arrives(
    engine: Podman, app: pods.PlayedPod, receiver: Receiver
) -> None:
    pods.wait_http_ok(app.url(9102, "/readyz"), what="log-shipper /readyz")
    pods.wait_http_ok(app.url(8080), what="nginx up")
    mountpoint = engine("volume", "inspect", f"{app.name}-logs", "--format", "{{.Mountpoint}}")
    logs = Path(mountpoint.stdout.strip())
    pids = []
    for container in ("nginx", "log-shipper", "metrics-proxy"):
        pid = engine.inspect(f"{app.name}-{container}")["State"]["Pid"]
        pids += process_tree(pid)
    marker = uuid.uuid4().hex[:12]
    paths = [f"/?e2e={marker}-{i:05d}" for i in range(REQUESTS)]
    shipper_log = f"{app.name}-log-shipper"
    try:
        with VolumeWatch(logs, pids, every=0.1) as watch:
            paced_load(app.ports[8080], paths, RATE)

            def arrived() -> list[str] | None:
                got = [x["line"] for x in receiver.lines() if marker in x["line"]]
                return got if len(got) >= REQUESTS else None

            lines = wait_until(arrived, timeout=120, interval=1, what="every request shipped")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{engine.logs(shipper_log)[-3000:]}") from None
    got = sorted(line.split('"')[1] for line in lines)
    assert got == [f"GET {path} HTTP/1.1" for path in paths], "each request exactly once"
    assert watch.samples > 100
    print(f"logs volume peak: {watch.peak} bytes ({watch.samples} samples)")
    assert watch.peak <= CAP + 2 * ROTATE, watch.peak
    rotations = metric(app, "log_shipper_rotations_total", result="ok")
    assert rotations >= 10, (rotations, engine.logs(shipper_log)[-3000:])
    assert metric(app, "log_shipper_rotations_total", result="no_master") == 0
    assert metric(app, "log_shipper_dropped_bytes_total") == 0
    # Every rotated file goes once acknowledged and quiet (--rotate-wait, 5 s by default).
    wait_until(
        lambda: not [p for p in logs.iterdir() if p.name.startswith("access.log.")],
        timeout=60,
        what="rotated files deleted",
    )
    stats = receiver.stats()
    assert stats["duplicates"] == 0 and stats["rejected"] == 0, stats

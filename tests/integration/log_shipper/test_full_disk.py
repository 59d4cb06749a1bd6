"""A full state volume (ENOSPC on the checkpoint write), against the real process: nothing
lost, nothing half-written, a clear error, recovery once space is back.

The volumes are small tmpfs mounts (root only; skipped otherwise). On a full *logs* volume
nginx's own lines are what is lost (nginx reports it); the shipper must not make it worse: a
rename that fails is retried (tests/unit/log_shipper/test_rotation_logic.py), a reopen nginx
could not do is asked for again (below).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tests.integration.log_shipper.load import id_of, request_ids
from tests.integration.log_shipper.shipper import Shipper
from tests.support.ndjson_receiver import Receiver
from tests.support.nginx import APPS, AppNginx, have_nginx
from tests.support.procs import free_port, port_open, wait_until
from tests.support.tmpfs import fill, tmpfs

pytestmark = pytest.mark.integration


def append(log: Path, first: int, count: int) -> None:
    with open(log, "a") as out:
        out.writelines(f"entry {i}\n" for i in range(first, first + count))


def test_a_full_state_volume_holds_shipping_back_and_loses_nothing(
    tmp_path: Path, shippers: list[Shipper], receiver: Receiver
) -> None:
    log = tmp_path / "logs" / "access.log"
    log.parent.mkdir()
    append(log, 0, 100)
    with tmpfs(tmp_path / "state", "64k") as state_dir:
        state = state_dir / "state.json"
        shipper = Shipper(
            tmp_path / "shipper",
            "--paths", str(log),
            "--sink", f"http={receiver.url}",
            "--batch-wait", "100ms",
            "--checkpoint-interval", "200ms",
            state_file=state,
        )  # fmt: skip
        shippers.append(shipper.start())

        def shipped() -> list[str]:
            return [x["line"] for x in receiver.lines()]

        wait_until(lambda: len(shipped()) == 100, timeout=30, what="the first 100 lines")

        def failed_writes() -> float:
            return shipper.metric("log_shipper_state_writes_total", result="error")

        filler = fill(state_dir)
        append(log, 100, 100)
        wait_until(lambda: failed_writes() >= 1, timeout=30, what="a failed state write")
        # A failed write frees what its temp file took: take that too, then watch more fail.
        fill(state_dir)
        before, failed = state.read_bytes(), failed_writes()
        wait_until(lambda: failed_writes() >= failed + 2, timeout=30, what="more failed writes")
        # A batch is sent only once its boundary is durable: none is while the volume is full.
        assert len(shipped()) == 100
        assert state.read_bytes() == before, "the previous version, untouched"
        assert json.loads(before)["kind"] == "sidecars.log-shipper"
        assert sorted(p.name for p in state_dir.iterdir()) == ["filler", "state.json"], (
            "no temp file left behind"
        )
        assert shipper.proc.popen.poll() is None  # type: ignore[union-attr]
        error_lines = [
            json.loads(x)
            for x in shipper.output().splitlines()
            if x.startswith("{") and "cannot write state file" in x
        ]
        assert len(error_lines) == 1, "logged once, not once per retry"
        assert "No space left on device" in json.dumps(error_lines[0])
        filler.unlink()  # space is back
        wait_until(lambda: len(shipped()) == 200, timeout=30, what="the held-back 100 lines")
        wait_until(
            lambda: "state file writable again" in shipper.output(),
            timeout=30,
            what="the recovery logged",
        )
        assert shipper.terminate() == 0
    lines = shipped()
    assert Counter(lines) == Counter(f"entry {i}" for i in range(200)), "each line exactly once"


def fill_inodes(directory: Path) -> list[Path]:
    """Create empty files until the file system has no inode left."""
    made: list[Path] = []
    while True:
        path = directory / f".placeholder-{len(made)}"
        try:
            path.touch()
        except OSError:
            return made
        made.append(path)


def test_a_reopen_nginx_cannot_do_on_a_full_logs_volume_is_asked_again_once_it_can(
    tmp_path: Path, shippers: list[Shipper], receiver: Receiver
) -> None:
    """nginx answers USR1 by opening a new access.log; on a volume with no room for one more
    file that fails, nginx logs it and goes on writing the renamed file, and never tries
    again by itself. The shipper asks again (every 10 s) until it works: nothing is lost."""
    if not have_nginx():
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    app = AppNginx(tmp_path / "nginx")
    port = free_port()
    conf = (APPS / "site" / "conf.d" / "site.conf").read_text()
    conf = conf.replace("${NGINX_PORT}", f"127.0.0.1:{port}").replace(
        "${SITE_DIR}", str(app.site_dir)
    )
    app.render()
    (app.site_dir / "conf.d").mkdir(parents=True, exist_ok=True)
    (app.site_dir / "html").mkdir(parents=True, exist_ok=True)
    (app.site_dir / "conf.d" / "site.conf").write_text(conf)
    (app.site_dir / "html" / "index.html").write_text("hello\n")
    with tmpfs(app.log_dir, "4m", "nr_inodes=64") as logs:
        try:
            app.start()
            wait_until(lambda: port_open(port), timeout=10, what="site port")
            shipper = Shipper(
                tmp_path / "shipper",
                "--paths", str(logs / "access.log"),
                "--sink", f"http={receiver.url}",
                "--batch-wait", "100ms",
                "--rotate-bytes", "16KiB",
                "--rotate-wait", "1s",
                "--nginx-pidfile", str(app.pid_file),
            )  # fmt: skip
            shippers.append(shipper.start())
            wait_until(lambda: '"shipping"' in shipper.output(), what="the shipper shipping")
            placeholders = fill_inodes(logs)
            request_ids(port, range(0, 300))  # past --rotate-bytes: renamed, USR1, no reopen
            wait_until(
                lambda: "did not reopen its log" in shipper.output(),
                timeout=30,
                what="the failed reopen noticed",
            )
            assert not (logs / "access.log").exists()
            request_ids(port, range(300, 400))  # still written, to the renamed file
            placeholders.pop().unlink()  # room for one file again
            wait_until(
                lambda: (logs / "access.log").exists(),
                timeout=30,
                what="nginx asked again, and reopened",
            )
            request_ids(port, range(400, 500))

            def access_ids() -> Counter[int | None]:
                return Counter(
                    id_of(x["line"]) for x in receiver.lines() if "access.log" in x["file"]
                )

            wait_until(lambda: sum(access_ids().values()) >= 500, timeout=60, what="500 lines")
            assert access_ids() == Counter(range(500)), "every request once"
            assert "nginx told again to reopen its logs" in shipper.output()
        finally:
            app.stop()

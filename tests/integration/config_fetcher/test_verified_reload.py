"""Every reload verified against the real nginx: a config nginx refuses is rolled back on the
volume (nginx kept serving the last good one from memory), counted, logged with nginx's own
[emerg] line and not tried again until the source changes; what nginx serves is exposed beside
what is published, and survives a restart of the fetcher.

What the check reads is outside input (nginx's error log, /proc, the state file on a shared
volume); how it could be fooled or broken, and the test that answers each:
- an [emerg] planted through a request path (logged by a worker at [error]):
  test_an_emerg_in_a_request_path_is_not_a_rejection; any noise, any read chunking:
  tests/unit/config_fetcher/test_reload_check.py (property test)
- a flood appended to the error log during the check (memory):
  test_an_error_log_flood_during_a_reload_costs_no_memory
- the log rotated or truncated meanwhile: test_reload_check.py::test_read_appended_...
- the log swapped for a FIFO: test_reload_check.py::test_an_error_log_swapped_for_a_fifo_...
- a slow nginx taking the version after the check gave up:
  test_a_reload_judged_too_slow_ends_with_nginx_on_the_rolled_back_version
- a worker crash-respawn mistaken for a reload, a master ignoring SIGHUP:
  test_reload_check.py::test_replaced_..., ::test_an_nginx_that_starts_no_new_workers_...
- no pid known (webhook): test_webhook_reloads_are_checked_in_the_error_log
- killed before the verdict or before the switch back: test_a_reload_crashing_before_...,
  test_repair.py::test_a_rollback_cut_short_...
- a torn or hostile state file (a version naming ../ or ..data): test_served.py
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from tests.integration.config_fetcher.pod import PodLike, Watch, bundle, pod, push
from tests.support.nginx import have_nginx
from tests.support.procs import wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not have_nginx(), reason="nginx is not installed"),
]
__all__ = ["pod"]  # the fixture, used by name


def served(watch: Watch) -> list[str]:
    return [s["version"] for s in watch.series("config_fetcher_served_info")]


def rejected_lines(watch: Watch) -> list[dict]:
    return [e for e in watch.events() if e.get("result") == "rejected" and e["level"] == "error"]


def workers(master: int) -> set[int]:
    children: set[int] = set()
    for task in os.listdir(f"/proc/{master}/task"):
        with open(f"/proc/{master}/task/{task}/children") as f:
            children.update(int(p) for p in f.read().split())
    return children


@pytest.fixture
def running(pod: PodLike) -> Iterator[tuple[PodLike, Watch, str]]:
    """v1 published by the init container, nginx serving it, the watch sidecar beside it."""
    push(pod.origin, bundle("v1"))
    assert pod.init().code == 0
    pod.app.start()
    good = pod.data_version()
    watch = pod.watch()
    wait_until(lambda: served(watch) == [good], timeout=20, what="nginx seen serving v1")
    yield pod, watch, good


def test_a_rejected_config_is_rolled_back_and_the_next_good_one_served(
    running: tuple[PodLike, Watch, str],
) -> None:
    pod, watch, good = running
    push(pod.origin, bundle("v2", broken=True))
    wait_until(
        lambda: (
            watch.metric("config_fetcher_reloads_total", method="signal", result="rejected") == 1
        ),
        timeout=20,
        what="the reload counted rejected",
    )
    # The volume holds the version nginx serves again: its next restart starts fine.
    assert pod.data_version() == good
    assert pod.get("/version") == (200, b"v1\n")
    assert pod.get("/") == (200, b"v1\n")
    assert (pod.app.site_dir / "conf.d" / "site.conf").read_bytes().count(b"locatio ") == 0
    (line,) = rejected_lines(watch)
    assert "[emerg]" in line["nginx_error"] and 'unknown directive "locatio"' in line["msg"]
    assert line["rolled_back_to"] == good
    assert served(watch) == [good]
    published = watch.series("config_fetcher_published_info")
    assert [p["version"] for p in published] == [good]
    assert watch.metric("config_fetcher_rejected") == 1
    # Not tried again while the origin holds the same content: no publish, no signal.
    wait_until(
        lambda: watch.metric("config_fetcher_fetches_total", result="rejected") >= 3,
        timeout=20,
        what="the rejected content seen again",
    )
    assert watch.metric("config_fetcher_fetches_total", result="published") == 1
    assert watch.metric("config_fetcher_reloads_total", method="signal", result="rejected") == 1
    assert watch.metric("config_fetcher_reloads_total", method="signal", result="ok") == 0
    assert pod.data_version() == good
    # A fixed config goes through and is served.
    push(pod.origin, bundle("v3"))
    wait_until(lambda: pod.get("/version") == (200, b"v3\n"), timeout=20, what="v3 served")
    wait_until(
        lambda: served(watch) == [pod.data_version()] != [good],
        timeout=20,
        what="served_info on v3",
    )
    # served_info is set before the reload is counted (counted once handled): wait for it.
    wait_until(
        lambda: watch.metric("config_fetcher_reloads_total", method="signal", result="ok") == 1,
        timeout=20,
        what="the reload of v3 counted",
    )
    assert watch.metric("config_fetcher_rejected") == 0


def test_a_restarted_fetcher_knows_what_nginx_serves_and_skips_the_rejected(
    running: tuple[PodLike, Watch, str],
) -> None:
    pod, watch, good = running
    push(pod.origin, bundle("v2", broken=True))
    wait_until(lambda: rejected_lines(watch), timeout=20, what="the rejection")
    assert watch.stop() == 0
    master = pod.app.master_pid()
    before = workers(master)

    again = pod.watch()
    assert served(again) == [good], "read back from the state file at start"
    assert again.metric("config_fetcher_rejected") == 1
    wait_until(
        lambda: again.metric("config_fetcher_fetches_total", result="rejected") >= 2,
        timeout=20,
        what="the rejected content fetched again",
    )
    assert again.metric("config_fetcher_fetches_total", result="published") == 0
    assert (
        sum(
            again.metric("config_fetcher_reloads_total", method="signal", result=r)
            for r in ("ok", "rejected", "error", "no_target")
        )
        == 0
    )
    assert workers(master) == before, "nginx was not signalled"
    # An init container run again (a new Pod sandbox on the same volume) skips it as well.
    run = pod.init("--reload-pidfile", str(pod.app.pid_file))
    assert run.code == 0, run.stdout
    assert pod.data_version() == good
    assert any("nginx rejected" in e.get("msg", "") for e in run.events), run.stdout
    assert workers(master) == before, "--once never signals nginx"
    state = json.loads((pod.app.site_dir / "..sidecars-state.json").read_text())
    assert state["data"]["served"]["version"] == good


def test_a_reload_crashing_before_rollback_is_finished_at_the_next_start(
    running: tuple[PodLike, Watch, str],
) -> None:
    """Killed between publishing the broken version and seeing nginx refuse it: the next start
    sees nginx does not serve ..data, reloads once, sees the refusal, rolls back."""
    pod, watch, good = running
    watch.proc.signal(signal.SIGKILL)
    watch.proc.wait(timeout=10)
    push(pod.origin, bundle("v2", broken=True))
    assert pod.init().code == 0, "stands in for the publish the killed sidecar made"
    assert pod.data_version() != good
    again = pod.watch()
    wait_until(lambda: rejected_lines(again), timeout=20, what="the refusal seen at start")
    assert pod.data_version() == good
    assert pod.get("/version") == (200, b"v1\n")


def test_nginx_not_running_is_not_signalled_and_seen_serving_once_started(pod: PodLike) -> None:
    push(pod.origin, bundle("v1"))
    watch = pod.watch()  # publishes itself: no init container, no nginx yet
    wait_until(
        lambda: (
            watch.metric("config_fetcher_reloads_total", method="signal", result="no_target") == 1
        ),
        timeout=20,
        what="the skipped reload",
    )
    assert served(watch) == []
    pod.app.start()  # loads ..data as it starts
    wait_until(lambda: served(watch) == [pod.data_version()], timeout=20, what="nginx seen serving")
    assert watch.metric("config_fetcher_reloads_total", method="signal", result="ok") == 0
    push(pod.origin, bundle("v2"))
    wait_until(lambda: pod.get("/version") == (200, b"v2\n"), timeout=20, what="v2 served")
    wait_until(
        lambda: watch.metric("config_fetcher_reloads_total", method="signal", result="ok") == 1,
        timeout=20,
        what="the verified reload",
    )


def test_an_emerg_in_a_request_path_is_not_a_rejection(
    running: tuple[PodLike, Watch, str],
) -> None:
    """The error log is outside input: a request for /[emerg] ... lands in it (at [error], from
    a worker) and must not roll back a config nginx accepted."""
    pod, watch, _ = running
    raw = b'location /raw/ { root ${SITE_DIR}; }\n    location = /version { return 200 "v2\\n"; }'
    conf = bundle("v2")
    conf["conf.d/site.conf"] = conf["conf.d/site.conf"].replace(
        b'location = /version { return 200 "v2\\n"; }', raw
    )
    push(pod.origin, conf)
    wait_until(lambda: pod.get("/version") == (200, b"v2\n"), timeout=20, what="v2 served")
    wait_until(
        lambda: watch.metric("config_fetcher_reloads_total", method="signal", result="ok") == 1,
        timeout=20,
        what="v2 verified",
    )
    stop = threading.Event()

    def flood() -> None:
        while not stop.is_set():
            pod.get("/raw/%5Bemerg%5D%20unknown%20directive")

    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    try:
        wait_until(
            lambda: b"[emerg] unknown" in pod.error_log.read_bytes(), timeout=10, what="the bait"
        )
        push(pod.origin, bundle("v3"))
        wait_until(
            lambda: watch.metric("config_fetcher_reloads_total", method="signal", result="ok") == 2,
            timeout=20,
            what="v3 verified",
        )
    finally:
        stop.set()
        flooder.join(timeout=10)
    assert watch.metric("config_fetcher_reloads_total", method="signal", result="rejected") == 0
    assert pod.get("/version") == (200, b"v3\n")


class _ReloadAgent(BaseHTTPRequestHandler):
    """A webhook receiver standing in for a reload agent in nginx's container."""

    master_pid: int = 0
    flood: Path | None = None  # an error log to grow by a GiB (a hole: no disk, no time) first

    def do_POST(self) -> None:
        if self.flood is not None:
            with self.flood.open("ab") as log:
                log.truncate(log.tell() + 1024**3)
        os.kill(self.master_pid, signal.SIGHUP)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def reload_agent(pod: PodLike, flood: bool = False) -> Iterator[HTTPServer]:
    _ReloadAgent.master_pid = pod.app.master_pid()
    _ReloadAgent.flood = pod.error_log if flood else None
    agent = HTTPServer(("127.0.0.1", 0), _ReloadAgent)
    thread = threading.Thread(target=agent.serve_forever, daemon=True)
    thread.start()
    try:
        yield agent
    finally:
        agent.shutdown()
        agent.server_close()


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_an_error_log_flood_during_a_reload_costs_no_memory(pod: PodLike) -> None:
    """A GiB appended to the error log between the signal and the check (one line without an
    end, the worst case for a line reader): read bounded, held never, and the reload decided."""
    push(pod.origin, bundle("v1"))
    assert pod.init().code == 0
    pod.app.start()
    with reload_agent(pod, flood=True) as agent:
        args = ["--reload-webhook", f"http://127.0.0.1:{agent.server_port}/reload"]
        watch = pod.watch(*args, "--reload-timeout", "2", pidfile=False)
        before = peak_rss_kib(watch.proc.pid)
        push(pod.origin, bundle("v2"))
        wait_until(lambda: pod.get("/version") == (200, b"v2\n"), timeout=20, what="v2 served")
        wait_until(
            lambda: (
                watch.metric("config_fetcher_reloads_total", method="webhook", result="ok") == 1
            ),
            timeout=20,
            what="the reload decided",
        )
        assert pod.error_log.stat().st_size > 1024**3
        peak = peak_rss_kib(watch.proc.pid)
    assert peak - before < 16 * 1024, f"peak RSS {before} -> {peak} KiB"


def test_webhook_reloads_are_checked_in_the_error_log(pod: PodLike) -> None:
    """Under a webhook the fetcher knows no pid: nginx's [emerg] in its error log still tells."""
    push(pod.origin, bundle("v1"))
    assert pod.init().code == 0
    pod.app.start()
    good = pod.data_version()
    with reload_agent(pod) as agent:
        args = ["--reload-webhook", f"http://127.0.0.1:{agent.server_port}/reload"]
        watch = pod.watch(*args, "--reload-timeout", "5", pidfile=False)
        push(pod.origin, bundle("v2", broken=True))
        wait_until(
            lambda: (
                watch.metric("config_fetcher_reloads_total", method="webhook", result="rejected")
                == 1
            ),
            timeout=20,
            what="the webhook reload counted rejected",
        )
        assert pod.data_version() == good
        assert "[emerg]" in rejected_lines(watch)[0]["nginx_error"]
        push(pod.origin, bundle("v3"))
        wait_until(lambda: pod.get("/version") == (200, b"v3\n"), timeout=20, what="v3 served")
        wait_until(
            lambda: (
                watch.metric("config_fetcher_reloads_total", method="webhook", result="ok") == 1
            ),
            timeout=20,
            what="the webhook reload counted ok",
        )


def test_without_a_reload_method_nothing_is_reloaded_or_waited_for(pod: PodLike) -> None:
    """No pid file and no webhook: nginx is not ours to reload (the error log, there by default,
    is not read, and no reload is counted)."""
    push(pod.origin, bundle("v1"))
    watch = pod.watch(pidfile=False)
    push(pod.origin, bundle("v2-longer"))
    wait_until(
        lambda: watch.metric("config_fetcher_fetches_total", result="published") == 2,
        timeout=20,
        what="both published",
    )
    assert watch.series("config_fetcher_reloads_total") == []
    assert watch.series("config_fetcher_served_info") == []


def test_a_publish_cut_short_after_the_swap_is_still_reloaded(
    running: tuple[PodLike, Watch, str],
) -> None:
    """A publish that fails after ``..data`` has switched (here the link of a new top-level
    name cannot be made: a directory squats the temporary link's name) leaves a version that
    nginx has not loaded. The next check sees the same content: it must finish the links and
    reload nginx, not call the content "unchanged" and leave nginx on the old version."""
    pod, watch, good = running
    tag = hashlib.sha256(b"extra").hexdigest()[:16]  # publish.py's temporary link name
    squatter = pod.app.site_dir / f"..tmp-link-{tag}-{watch.proc.pid}"
    squatter.mkdir()
    (squatter / "x").write_text("")
    push(pod.origin, bundle("v2", extra=b"new\n"))
    wait_until(
        lambda: watch.metric("config_fetcher_failures_total", stage="publish") >= 1,
        timeout=20,
        what="the publish failing after the swap",
    )
    assert pod.data_version() != good
    (squatter / "x").unlink()
    squatter.rmdir()
    wait_until(lambda: pod.get("/version") == (200, b"v2\n"), timeout=20, what="v2 served")
    wait_until(lambda: served(watch) == [pod.data_version()], timeout=20, what="served v2")
    assert (pod.app.site_dir / "extra").read_bytes() == b"new\n"


def test_a_reload_judged_too_slow_ends_with_nginx_on_the_rolled_back_version(
    pod: PodLike,
) -> None:
    """No verdict within --reload-timeout counts as a rejection and ``..data`` goes back, but a
    slow nginx (a big config, a slow resolver at load) may still take the new version after
    the check gave up. It is signalled again after the rollback, so what it serves ends up
    being what the volume and config_fetcher_served_info say. A 1 ms timeout stands in for a
    slow nginx: real nginx never replaces its workers that fast."""
    push(pod.origin, bundle("v1"))
    assert pod.init().code == 0
    pod.app.start()
    good = pod.data_version()
    watch = pod.watch("--reload-timeout", "1ms")
    wait_until(lambda: served(watch) == [good], timeout=20, what="nginx seen serving v1")
    master = pod.app.master_pid()
    before = workers(master)
    push(pod.origin, bundle("v2"))
    wait_until(lambda: rejected_lines(watch), timeout=20, what="v2 judged rejected (too slow)")
    assert pod.data_version() == good
    assert served(watch) == [good]
    # nginx did take v2 meanwhile: its workers from before are gone.
    wait_until(lambda: not workers(master) & before, timeout=20, what="nginx's reload done")
    wait_until(
        lambda: pod.get("/version") == (200, b"v1\n"),
        timeout=20,
        what="nginx back on the version the volume holds",
    )

"""Suite-wide rules.

Under CI=true an `e2e_pod` test may not skip: CI machines install podman (tests/run), so a skip
there means the level silently did not run. Such a skip is turned into a failure that says why.
The kind level (`e2e_kind`) may skip: no kindest/node image can be had on these machines; a
CI job built for kind makes it strict too with SIDECARS_STRICT_MARKERS=e2e_kind.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


def strict_markers() -> set[str]:
    extra = os.environ.get("SIDECARS_STRICT_MARKERS", "")
    return {"e2e_pod", *(m.strip() for m in extra.split(",") if m.strip())}


def ci_strict() -> bool:
    return os.environ.get("CI", "").lower() == "true"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not (ci_strict() and report.skipped) or hasattr(report, "wasxfail"):
        return
    strict = [marker for marker in sorted(strict_markers()) if item.get_closest_marker(marker)]
    if not strict:
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    reason = reason.removeprefix("Skipped: ")
    report.outcome = "failed"
    report.longrepr = f"CI=true: an {strict[0]} test may not skip, but it did: {reason}"

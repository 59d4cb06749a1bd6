"""A password in a URL given to --env is refused whatever it holds: a ',' (valid in a URL's
userinfo) ended the URL the check looked at, so the password went into the manifest."""

from __future__ import annotations

import pytest

from tests.unit.inject.test_edges import DEPLOYMENT, refused


@pytest.mark.parametrize(
    "setting",
    [
        "CONFIG_FETCHER_SOURCE=https://u:s3,cr3t@origin.example/site.tar.gz",
        "METRICS_PROXY_STUB_STATUS_URL=http://u:s3,cr3t@127.0.0.1:8081/stub_status",
        "LOG_SHIPPER_SINK=stdout,loki=https://u:s3,cr3t@loki.example",
        "LOG_SHIPPER_SINK=loki=https://loki.example,http=https://u:s3cr3t@other.example",
    ],
)
def test_a_password_with_a_comma_in_a_url_is_refused(setting: str) -> None:
    err = refused(DEPLOYMENT, "--env", setting)
    assert "a password in a URL" in err and "cr3t" not in err, err

"""/metrics behind a bearer token or basic auth, over TLS; /healthz and /readyz stay open."""

from __future__ import annotations

import base64
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme

from tests.integration.metrics_proxy.conftest import Site
from tests.integration.metrics_proxy.proxy import Proxy

pytestmark = pytest.mark.integration


def test_bearer_token(nginx: Site, proxies: Callable[..., Proxy], tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")  # a final newline, as `kubectl create secret` files have
    proxy = proxies(
        "--stub-status-url", nginx.stub_status_url, "--bearer-token-file", str(token)
    ).wait_ready()

    status, body, headers = proxy.get("/metrics")
    assert status == 401 and headers["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert b"nginx_up" not in body
    assert proxy.get("/metrics", headers={"Authorization": "Bearer wrong"})[0] == 401
    assert proxy.get("/metrics", headers={"Authorization": "Basic czNjcmV0"})[0] == 401
    status, body, _ = proxy.get("/metrics", headers={"Authorization": "Bearer s3cret-token"})
    assert status == 200 and b"\nnginx_up 1\n" in body
    assert proxy.get("/healthz")[0] == 200
    assert proxy.get("/readyz")[0] == 200

    # A rotated token works at once, the old one no longer does.
    token.write_text("rotated\n")
    assert proxy.get("/metrics", headers={"Authorization": "Bearer rotated"})[0] == 200
    assert proxy.get("/metrics", headers={"Authorization": "Bearer s3cret-token"})[0] == 401
    _, body, _ = proxy.get("/metrics", headers={"Authorization": "Bearer rotated"})
    assert b'metrics_proxy_scrapes_total{result="unauthorized"} 4' in body


def test_basic_auth(nginx: Site, proxies: Callable[..., Proxy], tmp_path: Path) -> None:
    (tmp_path / "password").write_text("pa:ss")
    proxy = proxies(
        "--stub-status-url",
        nginx.stub_status_url,
        "--basic-auth-user",
        "prometheus",
        "--basic-auth-password-file",
        str(tmp_path / "password"),
    ).wait_ready()

    def with_credentials(user: str, password: str) -> int:
        encoded = base64.b64encode(f"{user}:{password}".encode()).decode()
        return proxy.get("/metrics", headers={"Authorization": f"Basic {encoded}"})[0]

    assert proxy.get("/metrics")[0] == 401
    assert with_credentials("prometheus", "pa:ss") == 200
    assert with_credentials("prometheus", "wrong") == 401
    assert with_credentials("someone", "pa:ss") == 401


def test_tls(nginx: Site, proxies: Callable[..., Proxy], tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    client = ssl.create_default_context()
    ca.configure_trust(client)
    proxy = proxies(
        "--stub-status-url",
        nginx.stub_status_url,
        "--tls-cert-file",
        str(tmp_path / "server.pem"),
        "--tls-key-file",
        str(tmp_path / "server.pem"),
        scheme="https",
        ca=client,
    ).wait_ready()
    status, body, _ = proxy.get("/metrics")
    assert status == 200 and b"\nnginx_up 1\n" in body

    # A client that does not trust the CA refuses the server.
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(
            proxy.url + "/metrics", timeout=5, context=ssl.create_default_context()
        )


def test_tls_with_a_key_that_does_not_match(
    nginx: Site, proxies: Callable[..., Proxy], tmp_path: Path
) -> None:
    ca = trustme.CA()
    ca.issue_cert("127.0.0.1").cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    ca.issue_cert("127.0.0.1").private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    proxy = proxies(
        "--stub-status-url",
        nginx.stub_status_url,
        "--tls-cert-file",
        str(tmp_path / "cert.pem"),
        "--tls-key-file",
        str(tmp_path / "key.pem"),
    )
    assert proxy.proc.wait(timeout=15) == 2
    output = proxy.proc.output()
    assert "--tls-cert-file/--tls-key-file: cannot load" in output
    assert "Traceback" not in output


def vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_a_huge_token_file_swapped_in_is_refused_without_reading_it(
    nginx: Site, proxies: Callable[..., Proxy], tmp_path: Path
) -> None:
    """Memory as the attack: the token's file replaced by a 1 GiB (sparse) one. The proxy
    reads at most 64 KiB of it (it read the whole file into memory before it shared the
    log-shipper's secret reader), refuses every scrape meanwhile (fail closed) and takes the
    token again once the file is fixed."""
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    proxy = proxies(
        "--stub-status-url", nginx.stub_status_url, "--bearer-token-file", str(token)
    ).wait_ready()
    bearer = {"Authorization": "Bearer s3cret-token"}
    assert proxy.get("/metrics", headers=bearer)[0] == 200
    before = vm_hwm_kib(proxy.proc.pid)
    with open(token, "r+b") as out:
        out.truncate(1024**3)  # "s3cret-token\n" and then zeros
    assert proxy.get("/metrics", headers=bearer)[0] == 401
    assert vm_hwm_kib(proxy.proc.pid) - before < 8 * 1024, before
    assert "larger than 65536 bytes" in proxy.proc.output()
    token.write_text("s3cret-token\n")
    assert proxy.get("/metrics", headers=bearer)[0] == 200

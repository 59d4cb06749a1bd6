from __future__ import annotations

import re

import pytest

from sidecars.config_fetcher.bundle import Entry
from sidecars.config_fetcher.envsubst import DEFAULT_FILTER, substitute
from sidecars.config_fetcher.errors import VerifyError

FILTER = re.compile(DEFAULT_FILTER)


def test_only_uppercase_names_are_replaced_and_nginx_vars_survive() -> None:
    conf = b"listen ${PORT}; set $x ${host}; return 200 $uri;"
    out = substitute({"a.conf": Entry("file", conf)}, {"PORT": "8080", "host": "no"}, FILTER)
    assert out["a.conf"].data == b"listen 8080; set $x ${host}; return 200 $uri;"


def test_undefined_variable_names_file_and_variable() -> None:
    with pytest.raises(VerifyError, match=r"\$\{NGINX_PORT\} in conf.d/a.conf is not set"):
        substitute({"conf.d/a.conf": Entry("file", b"listen ${NGINX_PORT};")}, {}, FILTER)


def test_binary_files_untouched() -> None:
    binary = b"\x89PNG\0${PORT}"
    out = substitute({"x.png": Entry("file", binary)}, {"PORT": "1"}, FILTER)
    assert out["x.png"].data == binary


def test_custom_filter() -> None:
    out = substitute(
        {"a": Entry("file", b"${APP_X} ${OTHER}")}, {"APP_X": "1"}, re.compile("^APP_")
    )
    assert out["a"].data == b"1 ${OTHER}"

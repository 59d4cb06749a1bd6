from __future__ import annotations

import pytest

from sidecars.runtime.envexpand import expand, references


def test_expands_and_leaves_lone_dollars() -> None:
    assert expand("pod=${POD_NAME} $x $", {"POD_NAME": "web-0"}) == "pod=web-0 $x $"
    assert references("${A}-${B}") == ["A", "B"]


def test_unset_and_malformed_references() -> None:
    with pytest.raises(ValueError, match=r"\$\{POD\} is not set"):
        expand("${POD}", {})
    with pytest.raises(ValueError, match="not a valid variable reference"):
        references("${not valid}")

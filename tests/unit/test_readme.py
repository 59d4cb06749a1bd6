"""README.md stays true: the settings tables are generated, the two commands exist."""

from __future__ import annotations

from pathlib import Path

from sidecars import docs
from sidecars.__main__ import PARTS
from sidecars.runtime.settings import options

README = Path(__file__).resolve().parents[2] / "README.md"


def test_settings_tables_are_current() -> None:
    text = README.read_text()
    assert docs.render(text) == text, "stale settings tables: run python -m sidecars.docs"
    for part in PARTS:
        assert f"<!-- settings:{part} -->" in text, f"README has no settings table for {part}"
        for opt in options(docs.settings_class(part), part):
            assert f"`{opt.env}`" in text


def test_readme_opens_with_the_two_commands_and_they_exist() -> None:
    block = README.read_text().split("```", 2)[1]
    commands = [line.split("#")[0].split() for line in block.splitlines()[1:] if line.strip()]
    assert [c[:2] for c in commands] == [["bash", "k8s/demo/run.sh"], ["bash", "tests/run"]]
    for _, script in commands:
        assert (README.parent / script).is_file()
    ci = (README.parent / ".ci" / "run").read_text()
    assert "bash tests/run" in ci, ".ci/run must run the README's test command"

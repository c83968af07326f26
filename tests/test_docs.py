"""The docs stay true: every setting documented, the README opens with the two commands CI runs."""

from __future__ import annotations

import re
from pathlib import Path

from sitecomms.config import Settings

ROOT = Path(__file__).resolve().parent.parent


def test_every_setting_is_in_the_configuration_reference() -> None:
    reference = (ROOT / "docs" / "configuration.md").read_text()
    for name in Settings.model_fields:
        assert f"`SITECOMMS_{name.upper()}`" in reference, name


def test_readme_opens_with_the_run_and_test_commands_and_ci_runs_the_second() -> None:
    readme = (ROOT / "README.md").read_text()
    first_block = re.search(r"```sh\n(.*?)```", readme, re.S)
    assert first_block is not None
    assert readme.index("```sh") < readme.index("\n## ")
    commands = [line.split("#")[0].strip() for line in first_block.group(1).strip().splitlines()]
    assert commands == ["./scripts/demo", "./scripts/test"]
    assert "exec ./scripts/test" in (ROOT / ".ci" / "run").read_text()
    for script in ("demo", "test", "install", "services"):
        assert (ROOT / "scripts" / script).stat().st_mode & 0o111, script

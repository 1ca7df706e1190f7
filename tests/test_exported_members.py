"""Each package's `__all__` is exactly what it exports (after HTTPX's test of the same name)."""

from __future__ import annotations

import importlib

import pytest

from ops.cli import main


@pytest.mark.parametrize("package", ["router", "ops", "specialists"])
def test_all_matches_public_names(package: str) -> None:
    module = importlib.import_module(package)
    exported = set(module.__all__)
    public = {name for name in vars(module) if not name.startswith("_")
              and getattr(getattr(module, name), "__module__", "").startswith(package)}
    assert exported == public
    for name in exported:
        assert getattr(module, name) is not None


def test_training_commands_forward_to_the_offline_tools(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["train", "--help"])
    assert done.value.code == 0
    assert "--train" in capsys.readouterr().out

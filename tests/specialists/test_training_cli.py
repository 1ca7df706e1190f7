"""The offline tools as an operator runs them: reproducible training, and `hybrid-router eval`."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from ops.cli import main as hybrid_router
from specialists import load_specialists
from tests.conftest import requires_shared_data
from tests.specialists.conftest import DATA_ROOT


def _digest(directory: Path) -> dict[str, str]:
    return {f: hashlib.sha256((directory / f).read_bytes()).hexdigest() for f in ("model.onnx", "features.json")}


def test_training_is_reproducible(tiny_data: dict[str, Path], tiny_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "again"
    with pytest.raises(SystemExit) as done:
        hybrid_router(["train", "--name", "tiny", "--train", str(tiny_data["train"]), "--dev", str(tiny_data["dev"]),
                       "--test", str(tiny_data["test"]), "--out", str(out), "--char-ngrams", "--no-speed"])
    assert done.value.code == 0
    assert _digest(out) == _digest(tiny_dir), "the same data and settings must give the same model bytes"


@pytest.mark.shared_data
@requires_shared_data()
def test_eval_reports_every_bundled_specialist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        hybrid_router(["eval", "--data-root", str(DATA_ROOT), "--out", str(tmp_path)])
    assert done.value.code == 0
    printed = capsys.readouterr().out
    specs = load_specialists()
    for name in specs:
        sibling = specs[name].manifest.raw.get("sibling")
        if sibling:  # a tier-2 specialist is shown against its tf-idf sibling
            assert f"{name} (tier 2) vs {sibling} (tier 1): accuracy" in printed
            if getattr(specs[name], "blend", None) is not None:  # and blended, as its cascade serves it
                recorded = specs[name].manifest.metrics["vs_sibling"]["blended_accuracy"]  # 5 digits
                found = re.search(rf"{name} \(tier 2\).*blended with {sibling} \(as the cascade serves it\): "
                                  r"accuracy ([0-9.]+)", printed)
                assert found is not None and float(found.group(1)) == pytest.approx(recorded, abs=1e-4)
    for name in specs:
        assert name in printed
        for kind in ("reliability", "risk_coverage"):
            png = tmp_path / f"{name}_{kind}.png"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png

"""The serving process never loads training libraries, and start-up does not import litellm."""

from __future__ import annotations

import subprocess
import sys

from router.settings import Settings
from tests.conftest import ROOT


def test_serving_imports_stay_light() -> None:
    code = (
        "import sys\n"
        "from router.app import create_app\n"
        "from router.settings import Settings\n"
        "create_app(Settings(_env_file=None))\n"
        "bad = sorted(m for m in ('sklearn', 'skl2onnx', 'onnx', 'matplotlib', 'specialists.training', 'litellm')"
        " if m in sys.modules)\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
                         env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_settings_read_nested_environment(monkeypatch: object) -> None:
    import pytest

    mp = pytest.MonkeyPatch()
    try:
        mp.setenv("ROUTER_REDIS__URL", "redis://127.0.0.1:6379/3")
        mp.setenv("ROUTER_FOUNDATION__MODEL", "openai/gpt-4o-mini")
        mp.setenv("ROUTER_PORT", "9999")
        s = Settings(_env_file=None)
        assert s.redis.url is not None and s.redis.url.get_secret_value().endswith("/3")
        assert s.foundation.model == "openai/gpt-4o-mini" and s.port == 9999
        assert "6379" not in repr(s)  # secrets are not printed
    finally:
        mp.undo()

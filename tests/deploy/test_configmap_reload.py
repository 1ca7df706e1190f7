"""Hot reload of a policy mounted from a Kubernetes ConfigMap: kubelet swaps a symlink.

A ConfigMap volume holds `default.yaml -> ..data/default.yaml` and `..data -> ..<timestamp>/`.
An update writes a new timestamped directory, points a temporary link at it and renames that
link over `..data` (atomic), then deletes the old directory. The test does exactly that, with
the new file given the old file's size and mtime, so only the file's identity (its inode) shows
the change: a reloader that stats the path for mtime and size alone misses it.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry

from router.app import create_app
from router.settings import Settings
from tests.server_thread import ServerThread


def _kubelet_write(volume: Path, stamp: str, name: str, text: str) -> Path:
    """The new payload directory, then the atomic `..data` swap, then the old directory removed."""
    new_dir = volume / f"..{stamp}"
    new_dir.mkdir()
    (new_dir / name).write_text(text)
    old_target = os.readlink(volume / "..data") if (volume / "..data").is_symlink() else None
    tmp_link = volume / "..data_tmp"
    tmp_link.symlink_to(new_dir.name)
    os.rename(tmp_link, volume / "..data")  # rename(2) replaces the old link atomically
    if not (volume / name).is_symlink():
        (volume / name).symlink_to(f"..data/{name}")
    if old_target is not None:
        shutil.rmtree(volume / old_target)
    return new_dir / name


def test_a_configmap_symlink_swap_is_reloaded(tmp_path: Path, write_policy: Callable[..., Path],
                                               make_settings: Callable[..., Settings]) -> None:
    def threshold(value: str) -> Callable[[Any], None]:
        def edit(doc: Any) -> None:
            doc["routes"]["sentiment"]["min_confidence"] = float(value)
        return edit

    first = write_policy(edit=threshold("0.25"), name="first.yaml").read_text()
    second = write_policy(edit=threshold("0.75"), name="second.yaml").read_text()
    assert len(first) == len(second) and first != second

    volume = tmp_path / "policies"
    volume.mkdir()
    old_file = _kubelet_write(volume, "2026_11_30_09_00_00.000000001", "default.yaml", first)
    policy_path = volume / "default.yaml"
    settings = make_settings(policy_path, use_redis=False, policy_poll_s=0.1, admin_token="t0ken")
    app = create_app(settings, registry=CollectorRegistry())
    server = ServerThread(app).start()
    try:
        admin = {"authorization": "Bearer t0ken"}
        v1 = httpx.get(server.url + "/admin/policy", headers=admin).json()["version"]
        st = old_file.stat()
        new_file = _kubelet_write(volume, "2026_11_30_09_05_00.000000002", "default.yaml", second)
        os.utime(new_file, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime, same size: only the inode differs
        assert (new_file.stat().st_size, new_file.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
        deadline = time.monotonic() + 5
        while True:
            body = httpx.get(server.url + "/admin/policy", headers=admin).json()
            if body["version"] != v1:
                break
            assert time.monotonic() < deadline, "the ..data symlink swap was not picked up by hot reload"
            time.sleep(0.05)
        assert body["last_reload"]["trigger"] == "file_change"
        served = httpx.post(server.url + "/v1/classify", json={"task": "sentiment", "input": "fine ."}).json()
        assert served["policy_version"] == body["version"]
    finally:
        server.stop()

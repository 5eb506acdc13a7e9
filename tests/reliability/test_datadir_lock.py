"""Fault: `citygw run` started twice on one data_dir (issue 10, item 3).

The second process must refuse to start, with a message naming the first one's pid, and leave the first
one running; once the first is gone (even SIGKILLed) the data_dir can be used again.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gateway.app import Gateway
from gateway.datadir import DataDirInUseError, DataDirLock
from gateway.settings import load_settings
from tests.reliability.support import GatewayProcess, StatusPage, kit_config, wait_for


def test_second_run_on_one_data_dir_exits_naming_the_first_pid(tmp_path: Path) -> None:
    first_status, second_status = StatusPage(), StatusPage()
    first_cfg = kit_config(tmp_path, "lock-a", first_status)
    # The same data_dir; only the status port (and the config's file name) differ.
    second_cfg = kit_config(tmp_path, "lock-b", second_status)
    first = GatewayProcess(first_cfg, tmp_path / "first.log").start()
    try:
        wait_for(lambda: first_status.status().get("gateway") == "lock-a", 30, "the first gateway up")
        assert first.proc is not None
        second = GatewayProcess(second_cfg, tmp_path / "second.log").start()
        assert second.proc is not None
        code = second.proc.wait(timeout=60)
        text = second.log()
        assert code == 1, text
        assert f"pid {first.proc.pid}" in text
        assert str(tmp_path / "data") in text and "in use by another citygw" in text
        assert "Traceback" not in text
        assert first.proc.poll() is None and first_status.status().get("gateway") == "lock-a"

        first.kill()  # the kernel drops a dead process's flock: no stale lock after a crash
        third = GatewayProcess(second_cfg, tmp_path / "third.log").start()
        proc = third.proc
        assert proc is not None
        try:
            wait_for(lambda: second_status.status().get("gateway") == "lock-b" or proc.poll() is not None,
                     30, "a gateway on the data_dir after the first was killed")
            assert proc.poll() is None, third.log()
            assert (tmp_path / "data" / "citygw.lock").read_text().strip() == str(proc.pid)
        finally:
            third.stop()
    finally:
        first.stop()


def test_gateway_objects_share_the_lock_and_release_it_on_stop(tmp_path: Path) -> None:
    settings = load_settings(kit_config(tmp_path, "lock-c", StatusPage()), env={})
    gateway = Gateway(settings)
    try:
        with pytest.raises(DataDirInUseError, match=r"in use by another citygw \(pid \d+"):
            Gateway(settings)
    finally:
        gateway.stop()
    again = Gateway(settings)  # stop() released it
    again.stop()


def test_lock_is_exclusive_between_holders(tmp_path: Path) -> None:
    with DataDirLock(tmp_path) as first:
        assert first.held
        with pytest.raises(DataDirInUseError) as caught:
            DataDirLock(tmp_path).acquire()
        assert caught.value.pid is not None and caught.value.pid > 0
    started = time.monotonic()
    with DataDirLock(tmp_path) as again:  # released on exit, taken again without waiting
        assert again.held
    assert time.monotonic() - started < 5

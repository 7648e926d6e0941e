"""The OpenMP wait crbench chooses before torch loads: a short spin unless the machine is busy."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from crbench import threads


@pytest.fixture
def clean_env(monkeypatch):
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    return monkeypatch


def test_spins_briefly_when_cores_are_free(clean_env):
    clean_env.setattr(os, "getloadavg", lambda: (0.5, 0.5, 0.5))
    threads.set_openmp_waiting()
    assert os.environ["GOMP_SPINCOUNT"] == threads.SPIN_COUNT
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"  # sleeps once the short spin is over


def test_sleeps_at_once_on_a_busy_machine(clean_env):
    clean_env.setattr(os, "getloadavg", lambda: (2.5, 1.0, 1.0))
    threads.set_openmp_waiting()
    assert "GOMP_SPINCOUNT" not in os.environ
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    assert "GOMP_SPINCOUNT=unset" in threads.describe()


def test_the_users_setting_wins(clean_env):
    clean_env.setattr(os, "getloadavg", lambda: (0.1, 0.1, 0.1))
    clean_env.setenv("GOMP_SPINCOUNT", "0")
    clean_env.setenv("OMP_WAIT_POLICY", "ACTIVE")
    threads.set_openmp_waiting()
    assert os.environ["GOMP_SPINCOUNT"] == "0" and os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_the_cli_sets_the_wait_before_torch_loads():
    """Importing the CLI decides the wait, and torch is not loaded yet at that point (the
    OpenMP runtime reads its variables once, when it loads)."""
    code = ("import sys, os; import crbench.cli.app; "
            "print('torch' in sys.modules, os.environ.get('OMP_WAIT_POLICY'))")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "PASSIVE"]

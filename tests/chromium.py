"""Headless Chromium for the tests that open crbench's pages (the report, the trace browser).

Without chromium those tests skip, unless CRBENCH_REQUIRE_CHROMIUM=1 (CI sets it): then a
missing chromium fails them, so a CI image that lost it cannot pass without the checks.
scripts/ensure-chromium installs it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest


def chromium_path() -> str:
    """The chromium executable; skips the test (fails it under CRBENCH_REQUIRE_CHROMIUM=1)."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None and Path("/usr/bin/chromium").exists():  # a PATH without /usr/bin
        path = "/usr/bin/chromium"
    if path is None:
        if os.environ.get("CRBENCH_REQUIRE_CHROMIUM") == "1":
            pytest.fail("chromium is required (CRBENCH_REQUIRE_CHROMIUM=1) but not installed; "
                        "run scripts/ensure-chromium")
        pytest.skip("chromium not installed (scripts/ensure-chromium installs it)")
    return path


def headless_chromium(page: Path | str, workdir: Path, *args: str) -> str:
    """Open a page (a file, or a URL such as one with a #fragment) in headless Chromium with a
    fresh profile under `workdir`; its stdout (e.g. the DOM with --dump-dom)."""
    url = page.as_uri() if isinstance(page, Path) else page
    profile = workdir / f"profile-{len(list(workdir.glob('profile-*')))}"
    cmd = [chromium_path(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-quic", f"--user-data-dir={profile}", "--virtual-time-budget=5000",
           *args, url]
    # Its own process group, so a hung browser is ended with all its helper processes.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, err[-2000:]
    return out

"""Run a command as `nobody` (uid 65534) so that file permissions apply even when tests run as root.

Used by the read-only run directory tests (tests/test_store.py, tests/test_faults_store.py):
root ignores permissions, so a folder chmod-ed read-only is only read-only to another user.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import crbench

NOBODY = 65534
DROP_TO_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]


def as_unprivileged(argv: list[str]) -> list[str]:
    """`argv` run as `nobody` when we are root (unchanged otherwise).

    A checkout inside a private folder (e.g. one made by `mktemp -d`, mode 0700) is made
    traversable (o+x, not listable) for the session and put back at exit. Fails the test in
    one line when `nobody` still cannot import crbench: without this check the test under way
    would fail later with an ImportError traceback that names neither cause."""
    if os.geteuid() != 0:
        return argv
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot make a folder read-only")
    let_nobody_through()
    problem = nobody_cannot_import_crbench()
    if problem:
        pytest.fail(problem, pytrace=False)
    return [*DROP_TO_NOBODY, *argv]


@functools.cache
def let_nobody_through() -> None:
    """Add o+x to the folders above this checkout's package and interpreter that lack it, and
    restore their modes when the test session exits."""
    package = Path(crbench.__file__).resolve().parent
    for start in (package, Path(sys.executable).parent):
        while (folder := first_private_folder(start)) is not None:
            mode = folder.stat().st_mode
            folder.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
            atexit.register(restore_mode, folder, stat.S_IMODE(mode))


def restore_mode(folder: Path, mode: int) -> None:
    with contextlib.suppress(FileNotFoundError):  # a test's own folder may be gone by then
        folder.chmod(mode)


@functools.cache
def nobody_cannot_import_crbench() -> str | None:
    """Why `nobody` cannot run this interpreter and import crbench; None when it can.

    Cached: the answer does not change within a session, and each check starts Python."""
    probe = subprocess.run([*DROP_TO_NOBODY, sys.executable, "-c", "import crbench"],
                           capture_output=True, text=True, timeout=300, cwd="/")
    if probe.returncode == 0:
        return None
    package = Path(crbench.__file__).resolve().parent
    private = first_private_folder(package) or first_private_folder(Path(sys.executable).parent)
    if private is None:  # not a folder's mode (ACLs, a file's mode): show what Python said
        last_line = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        return f"uid {NOBODY} (nobody) cannot import crbench from {package}: {last_line}"
    return (f"uid {NOBODY} (nobody) cannot read this checkout: {private}; make the folders "
            "above the checkout world-readable (chmod o+rx) to run this test")


def first_private_folder(path: Path) -> Path | None:
    """The first folder from / down to `path` that others may not enter (no o+x), if any."""
    for folder in [*reversed(path.parents), path]:
        if not folder.stat().st_mode & stat.S_IXOTH:
            return folder
    return None

"""tests/unprivileged.py: a checkout `nobody` cannot read fails the test in one clear line."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import unprivileged


def test_first_private_folder_names_the_folder_others_cannot_enter():
    # Not under tmp_path: its parents are private to root already.
    root = Path(tempfile.mkdtemp(prefix="crbench-private-"))
    try:
        root.chmod(0o755)
        private = root / "private"
        inner = private / "checkout" / "src"
        inner.mkdir(parents=True)
        private.chmod(0o700)
        assert unprivileged.first_private_folder(inner) == private
        private.chmod(0o711)  # entering is what importing needs; listing is not
        assert unprivileged.first_private_folder(inner) is None
    finally:
        shutil.rmtree(root)


def test_interpreter_in_a_private_folder_fails_with_the_folder_named(monkeypatch):
    """The probe really runs: an interpreter inside a folder made by `mktemp -d` (mode 0700)
    cannot be started by nobody, and the message names that folder."""
    private = Path(tempfile.mkdtemp(prefix="crbench-private-"))
    assert private.stat().st_mode & 0o777 == 0o700
    try:
        (private / "bin").mkdir()
        python = private / "bin" / "python"
        python.symlink_to(sys.executable)
        monkeypatch.setattr(unprivileged.sys, "executable", str(python))
        unprivileged.nobody_cannot_import_crbench.cache_clear()
        problem = unprivileged.nobody_cannot_import_crbench()
    finally:
        unprivileged.nobody_cannot_import_crbench.cache_clear()
        shutil.rmtree(private)
    assert problem == (f"uid 65534 (nobody) cannot read this checkout: {private}; make the "
                       "folders above the checkout world-readable (chmod o+rx) to run this test")


def test_as_unprivileged_fails_rather_than_runs_when_nobody_cannot_import(monkeypatch):
    monkeypatch.setattr(unprivileged, "nobody_cannot_import_crbench", lambda: "cannot: /x")
    monkeypatch.setattr(unprivileged.os, "geteuid", lambda: 0)
    monkeypatch.setattr(unprivileged.shutil, "which", lambda name: f"/usr/bin/{name}")
    with pytest.raises(pytest.fail.Exception, match="^cannot: /x$"):
        unprivileged.as_unprivileged(["true"])


def test_a_private_folder_above_the_interpreter_is_made_traversable(monkeypatch):
    """A checkout cloned into `mktemp -d` (0700): the folder gets o+x (entering, not listing)
    so nobody can start the interpreter and import crbench; the old mode is put back at exit."""
    private = Path(tempfile.mkdtemp(prefix="crbench-private-"))
    try:
        (private / "bin").mkdir(mode=0o755)
        python = private / "bin" / "python"
        python.symlink_to(sys.executable)
        monkeypatch.setattr(unprivileged.sys, "executable", str(python))
        unprivileged.let_nobody_through.cache_clear()
        unprivileged.let_nobody_through()
        assert private.stat().st_mode & 0o777 == 0o701
        assert unprivileged.first_private_folder(private / "bin") is None
    finally:
        unprivileged.let_nobody_through.cache_clear()
        shutil.rmtree(private)

"""The command line itself: version, commands in pipeline order, third-party noise behind
--verbose."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import crbench

CRBENCH = [sys.executable, "-m", "crbench.cli"]


def crbench_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS", "TQDM_DISABLE",
                 "PYTHONWARNINGS"):
        env.pop(name, None)  # what the CLI itself decides is under test
    return subprocess.run([*CRBENCH, *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def test_version() -> None:
    result = crbench_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"crbench {crbench.__version__}"


def test_help_lists_commands_in_pipeline_order() -> None:
    result = crbench_cli("--help")
    assert result.returncode == 0
    listed = [line.split()[1] for line in result.stdout.splitlines()
              if line.startswith("│ ") and len(line.split()) > 2 and line.split()[1].islower()]
    stages = [name for name in ("demo", "compress", "run", "score", "export", "report")
              if name in listed]
    assert stages == ["demo", "compress", "run", "score", "export", "report"]
    assert listed.index("report") < listed.index("convert")  # helpers after the pipeline


def test_library_progress_bars_only_with_verbose(tmp_path: Path, fixtures: Path) -> None:
    text = tmp_path / "text.txt"
    text.write_text((fixtures / "compress_heldout.txt").read_text()[:3000])
    quiet = crbench_cli("ppl", "--model", "demo", "--data", str(text))
    assert quiet.returncode == 0, quiet.stderr
    assert "perplexity" in quiet.stdout
    assert "Loading weights" not in quiet.stderr and "it/s]" not in quiet.stderr, quiet.stderr
    loud = crbench_cli("--verbose", "ppl", "--model", "demo", "--data", str(text))
    assert loud.returncode == 0, loud.stderr
    assert "Loading weights" in loud.stderr  # the control: the bar exists and was hidden

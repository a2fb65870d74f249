"""The project's coverage settings measure the poller in child processes, and a child killed
with SIGKILL (as the crash tests kill the daemon) leaves nothing that breaks the combine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT

# A parent that runs the CLI in a child, then a child that imports poller and is killed.
PARENT = """
import subprocess, sys
subprocess.run([sys.executable, "-m", "poller", "--version"], check=True, capture_output=True)
code = "import os, signal, poller.errors; os.kill(os.getpid(), signal.SIGKILL)"
killed = subprocess.run([sys.executable, "-c", code])
assert killed.returncode == -9, killed.returncode
"""


def _coverage(folder: Path, command: str, *args: str) -> subprocess.CompletedProcess[str]:
    # This suite may itself run under coverage: its settings must not reach the run tested here.
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}
    rcfile = f"--rcfile={ROOT / 'pyproject.toml'}"
    return subprocess.run(
        [sys.executable, "-m", "coverage", command, rcfile, *args],
        capture_output=True,
        text=True,
        cwd=folder,
        env=env,
        timeout=120,
    )


def test_children_are_measured_and_a_killed_one_does_not_break_the_combine(
    tmp_path: Path,
) -> None:
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    run = _coverage(tmp_path, "run", str(script))
    assert run.returncode == 0, run.stderr
    data = sorted(p.name for p in tmp_path.glob(".coverage.*"))
    assert len(data) == 2, data  # the parent and the --version child; the killed one wrote none
    assert _coverage(tmp_path, "combine", "-q").returncode == 0
    report = _coverage(tmp_path, "report", "--format=total", "--include=*/poller/cli.py")
    assert report.returncode == 0, report.stderr
    assert float(report.stdout) > 0  # only the child ever ran poller.cli

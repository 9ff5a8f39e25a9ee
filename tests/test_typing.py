"""The package type-checks: ``mypy src`` with the settings of pyproject.toml [tool.mypy]."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None,
                    reason="mypy is not installed in this environment (pip install mypy)")
def test_mypy_reports_no_errors_in_src() -> None:
    done = subprocess.run([sys.executable, "-m", "mypy", "src"], cwd=ROOT, capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, f"mypy src exited {done.returncode}:\n{done.stdout}{done.stderr}"

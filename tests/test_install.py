"""A wheel install (``pip install .``, not editable) works like a clone: run from an empty
folder, it writes its build into that folder's ``build/`` and finds its package data and
sources (the Verilog cache key) through importlib, not through a source tree.

About a minute to install into a fresh venv (pip's local wheel cache) plus generation and
lint: ``long`` (``make test-long``).
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.long


def _run(cmd, cwd, env, timeout=900):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_wheel_install_runs_from_an_empty_folder(tmp_path):
    # A copy of the sources without build outputs, so pip's in-tree build cannot pick up
    # stale files and nothing is written into the repository.
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        "build", "out", ".venv", ".git", "*.egg-info", "__pycache__", ".pytest_cache",
        ".ruff_cache", ".hypothesis"))
    env = {k: v for k, v in os.environ.items()
           if k not in ("EXION_BUILD", "PYTHONPATH", "VIRTUAL_ENV")}
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path, env)
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(src)], tmp_path, env)
    site = Path(_run([str(venv / "bin" / "python"), "-c",
                      "import exion, os; print(os.path.dirname(exion.__file__))"],
                     tmp_path, env).stdout.strip())
    assert site.is_relative_to(venv), f"exion imported from {site}, not from the wheel"

    work = tmp_path / "empty"
    work.mkdir()
    proc = _run([str(venv / "bin" / "exion"), "gen", "--config", "toy", "--top", "dpu",
                 "--lint"], work, env)
    assert "lint: clean" in proc.stdout
    assert (work / "build" / "gen" / "exion_dpu.v").exists()
    assert (work / "build" / "gen" / "exion_dpu.json").exists()
    # the cache key covers the installed sources and package data (importlib, no tree)
    proc = _run([str(venv / "bin" / "python"), "-c",
                 "from exion.gen.verilog import source_files\n"
                 "print('\\n'.join(n for n, _ in source_files()))"], work, env)
    names = proc.stdout.split()
    for want in ("exion/config.py", "exion/errors.py", "exion.hw/dpu.py",
                 "exion.gen/verilog.py", "exion.sim/models/MULT18X18D.v"):
        assert want in names
    # nothing was written beside the installed package
    assert not (site / "build").exists() and not (site.parent / "build").exists()

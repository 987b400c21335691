"""Shared pytest set-up.

* ``long`` tests (big seeded random regressions) are *deselected*, not skipped, unless
  ``EXION_LONG=1`` (``make test-long``), so a skip never counts as a pass.
* ``EXION_SEED`` fixes the seed of every seeded test; otherwise each test prints its own.
* Generated Verilog and Verilated models are cached under the repository's ``build/`` for
  every test, also for tests that run in a temporary working directory (the build root
  follows the working directory, ``exion.paths.build_root``); ``EXION_BUILD`` overrides it.
"""

import os
from pathlib import Path

import pytest

from exion import PRESETS

os.environ.setdefault("EXION_BUILD", str(Path(__file__).resolve().parent.parent / "build"))


def pytest_collection_modifyitems(config, items):
    if os.environ.get("EXION_LONG") == "1":
        return
    keep, drop = [], []
    for item in items:
        (drop if item.get_closest_marker("long") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(params=["exion16", "toy"], ids=lambda n: n)
def preset(request):
    """The two reference presets of the verification contract (toy, exion16)."""
    return PRESETS[request.param]


@pytest.fixture
def cli_run(capsys):
    """Run ``exion ARGS...`` in-process: returns (exit code, stdout, stderr)."""
    from exion.gen import cli

    def _run(*argv):
        code = cli.main(list(argv))
        out = capsys.readouterr()
        return code, out.out, out.err
    return _run

"""Shared pytest set-up.

* ``long`` tests (big seeded random regressions) are *deselected*, not skipped, unless
  ``EXION_LONG=1`` (``make test-long``), so a skip never counts as a pass.
* ``EXION_SEED`` fixes the seed of every seeded test; otherwise each test prints its own.
* Generated Verilog and Verilated models are cached under the repository's ``build/`` for
  every test, also for tests that run in a temporary working directory (the build root
  follows the working directory, ``exion.paths.build_root``); ``EXION_BUILD`` overrides it.
* Verilator builds compile their C++ at ``-O0`` in the default suite (``EXION_CXX_OPT``, unless
  set): its benches run a few thousand cycles each, where g++ time dominates (the exion16
  FFN-Reuse unit: 229 s of build at ``-Os``, 17 s at ``-O0``, for a slower simulation of a
  few seconds). ``make test-long`` (``EXION_LONG=1``) keeps the runner's default, ``-Os``,
  for its long regressions. The DSC core's builds are the exception (``EXION_DSC_CXX_OPT`` =
  ``-Os``, unless set): its programs run tens of thousands of cycles each, hundreds of runs in
  the suite, and the toy core simulates about 10x faster at ``-Os`` (two block iterations on
  the Verilog memory: 12.8 s at ``-O0``, 3.8 s at ``-Os`` with the simulator's start) for about
  45 s more of g++ per build.
"""

import os
from pathlib import Path

import pytest

from exion import PRESETS

os.environ.setdefault("EXION_BUILD", str(Path(__file__).resolve().parent.parent / "build"))
if os.environ.get("EXION_LONG") != "1":
    os.environ.setdefault("EXION_CXX_OPT", "-O0")
    os.environ.setdefault("EXION_DSC_CXX_OPT", "-Os")


#: the files with the longest runs (exion16 generations and Verilator builds, the DSC's
#: benches), started first: ``make test`` hands whole files to its two workers
#: (``--dist loadfile``) in collection order, and a long file collected last would run
#: alone at the end. The rest keep pytest's order.
FIRST = ("test_sdue_rtl.py", "test_dsc_rtl.py", "test_cau_rtl.py", "test_cfse_rtl.py",
         "test_ffnr_rtl.py", "test_epre_rtl.py", "test_gemm_gmem_ports.py", "test_dpu_rtl.py",
         "test_demo.py", "test_dsc_harness.py", "test_gemm_rtl.py", "test_gemm_board.py",
         "test_epre.py", "test_cau.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(FIRST)))   # stable
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

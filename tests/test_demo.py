"""``exion demo`` end to end on the toy preset: every step passes and the report says so."""

import json
import os

import pytest

pytestmark = pytest.mark.rtl


def test_demo_toy(tmp_path, cli_run):
    # the suite's level (tests/conftest.py: -O0 unless make test-long): share the builds
    # the rest of the suite makes
    code, out, _ = cli_run("demo", "--config", "toy",
                           f"--cxx-opt={os.environ.get('EXION_CXX_OPT', '-O0')}",
                           "--out", str(tmp_path / "demo"), "--seed", "7")
    assert code == 0, out
    assert "RESULT: PASS" in out
    rep = json.loads((tmp_path / "demo" / "demo.json").read_text())
    steps = {s["block"]: s for s in rep["steps"]}
    assert {"dpu", "gemm", "dsc"} <= set(steps) and all(s["passed"] for s in steps.values())
    d = steps["dsc"]     # one sparse block iteration through the toy DSC core (issue 16)
    assert d["config"] == "toy" and d["cycles"] == d["model_cycles"] and "fc1_gelu" in \
        d["stage_cycles"]
    g = steps["gemm"]
    assert g["passes"] == g["golden_passes"] and g["sdue_alone_cycles"] <= g["rtl_cycles"]

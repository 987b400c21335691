"""The DPU's emitted Verilog, Verilated, under cocotb against golden.dpu (both presets)."""

import numpy as np
import pytest

from exion.gen.verilog import sources
from exion.golden.dpu import dpu as golden_dpu
from exion.sim.dpu_rtl import rtl_dpu
from exion.sim.runner import new_seed, rtl_build, run_bench

pytestmark = pytest.mark.rtl


def test_dpu_rtl_directed_and_random(preset):
    build = rtl_build(preset, "dpu")
    report = run_bench(build, "exion.sim.tb_dpu",
                       params={"cases": ["extremes", "random"], "n_random": 40})
    # The bench asserts bit-exactness itself; here check it really ran every case.
    assert report["passed"] is True
    assert report["dot_products"] == 10 + 40
    assert any(name.startswith(f"all_min_K{preset.k_max}") for name in report["cases"])


def test_rtl_dpu_matches_golden(preset):
    """The wrapper style every block follows: operands in, results out, compared here."""
    seed = new_seed()
    print(f"DPU {preset.name}: seed {seed} (re-run: EXION_SEED={seed})")
    rng = np.random.default_rng(seed)
    k = 3 * preset.lanes + 1                       # a partial last beat
    a = rng.integers(preset.wmin, preset.wmax + 1, (12, k))
    b = rng.integers(preset.wmin, preset.wmax + 1, (12, k))
    a[0], b[0] = preset.wmin, preset.wmin          # the largest product sum
    got, run = rtl_dpu(preset, a, b, seed=seed)
    np.testing.assert_array_equal(got, golden_dpu(preset, a, b))
    assert run["cycles"] >= 12 * -(-k // preset.lanes)


@pytest.mark.parametrize("preset_name,pipe_in,pipe_mul",
                         [pytest.param("toy", True, True, marks=pytest.mark.long),
                          ("exion16", True, True),
                          pytest.param("toy", False, False, marks=pytest.mark.long)],
                         ids=["toy-dsp-regs", "exion16-dsp-regs", "toy-dsp-comb"])
def test_dpu_rtl_ecp5_mult(preset_name, pipe_in, pipe_mul):
    """dpu_mult = "ecp5": MULT18X18D instances (with the simulation model
    sim/models/MULT18X18D.v) give the golden results at exactly the published latency
    (the bench checks every result's cycle): input and output registers inside the DSP on
    both presets, and (make test-long) the purely combinational DSP on toy."""
    from exion import PRESETS
    preset = PRESETS[preset_name]
    cfg = preset.replace(name=f"{preset.name}_ecp5", dpu_mult="ecp5", dpu_pipe_in=pipe_in,
                         dpu_pipe_mul=pipe_mul, dpu_pipe_tree_in=pipe_in)
    build = rtl_build(cfg, "dpu")
    assert [p.name for p in sources(build.verilog)][1:] == ["MULT18X18D.v"]
    assert "MULT18X18D" in build.verilog.read_text()
    report = run_bench(build, "exion.sim.tb_dpu",
                       params={"cases": ["extremes", "random"], "n_random": 40})
    assert report["passed"] is True
    assert report["dot_products"] == 10 + 40


@pytest.mark.long
def test_dpu_rtl_long_random(preset):
    build = rtl_build(preset, "dpu")
    report = run_bench(build, "exion.sim.tb_dpu",
                       params={"cases": ["random"], "n_random": 2000,
                               "k_random_max": preset.k_max})
    assert report["dot_products"] == 2000


@pytest.mark.long      # a traced build (the FST writer's compile, about 30 s)
def test_waveforms_on_request(tmp_path, monkeypatch):
    """--waves / EXION_WAVES writes a waveform into the run's own folder (FST when the lz4
    headers exist, VCD otherwise) and nothing into the working directory."""
    from pathlib import Path

    from exion import PRESETS
    from exion.gen.toolchain import fst_supported
    monkeypatch.chdir(tmp_path)
    build = rtl_build(PRESETS["toy"], "dpu", waves=True)
    report = run_bench(build, "exion.sim.tb_dpu", params={"cases": ["random"],
                                                              "n_random": 3})
    wave = Path(report["waves"])
    assert wave.exists() and wave.stat().st_size > 0
    assert wave.suffix == (".fst" if fst_supported() else ".vcd")
    assert str(wave).startswith(str(build.sim_dir))
    assert list(tmp_path.iterdir()) == []

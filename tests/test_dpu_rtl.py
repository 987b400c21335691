"""The DPU's emitted Verilog, Verilated, under cocotb against golden.dpu (both presets)."""

import pytest

from exion.sim.runner import rtl_build, run_bench

pytestmark = pytest.mark.rtl


def test_dpu_rtl_directed_and_random(preset):
    build = rtl_build(preset, "dpu")
    report = run_bench(build, "exion.sim.bench_dpu",
                       params={"cases": ["extremes", "random"], "n_random": 40})
    # The bench asserts bit-exactness itself; here check it really ran every case.
    assert report["passed"] is True
    assert report["dot_products"] == 10 + 40
    assert any(name.startswith(f"all_min_K{preset.k_max}") for name in report["cases"])


@pytest.mark.long
def test_dpu_rtl_long_random(preset):
    build = rtl_build(preset, "dpu")
    report = run_bench(build, "exion.sim.bench_dpu",
                       params={"cases": ["random"], "n_random": 2000,
                               "k_random_max": preset.k_max})
    assert report["dot_products"] == 2000


def test_waveforms_on_request(tmp_path, monkeypatch):
    """--waves / EXION_WAVES writes a waveform into the run's own folder (FST when the lz4
    headers exist, VCD otherwise) and nothing into the working directory."""
    from pathlib import Path

    from exion import PRESETS
    from exion.sim.toolchain import fst_supported
    monkeypatch.chdir(tmp_path)
    build = rtl_build(PRESETS["toy"], "dpu", waves=True)
    report = run_bench(build, "exion.sim.bench_dpu", params={"cases": ["random"],
                                                              "n_random": 3})
    wave = Path(report["waves"])
    assert wave.exists() and wave.stat().st_size > 0
    assert wave.suffix == (".fst" if fst_supported() else ".vcd")
    assert str(wave).startswith(str(build.sim_dir))
    assert list(tmp_path.iterdir()) == []

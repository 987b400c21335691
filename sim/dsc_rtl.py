"""``rtl_dsc``: descriptor programs through the Verilated DSC core (``hw/dsc.py``).

    prog = build_program(cfg, jobs_from_record(cfg, rec))       # sim/dsc_program.py
    runs, report = rtl_dsc(cfg, [prog])
    outs = read_results(cfg, prog, runs[0]["image"])           # == golden.dsc's products

The host memory image goes to the bench in one piece (bulk NumPy; the memory model is a
byte array), and comes back the same way after the run.
"""

from __future__ import annotations

from exion.config import Config

from .dsc_program import DscProgram
from .runner import rtl_build, run_bench_pickled

__all__ = ["rtl_dsc"]


def rtl_dsc(cfg: Config, programs: list[DscProgram], *, stall: float | list = 0.0,
            seed: int | None = None, waves: bool = False, run_name: str = "dsc",
            progress=None) -> tuple[list[dict], dict]:
    """Run each program (one ``start`` each) on the ``dsc_core`` top; ``stall``: the
    probability of a memory-side stall per handshake signal and cycle (one value, or one per
    program). Returns per run
    ``{"image", "cycles", "passes", "error", "stages"}`` and the bench report."""
    build = rtl_build(cfg, "dsc_core", waves=waves, progress=progress)
    stalls = list(stall) if isinstance(stall, (list, tuple)) else [stall] * len(programs)
    runs = [{"image": p.image, "prog_base": p.prog_base, "stall": float(s)}
            for p, s in zip(programs, stalls)]
    return run_bench_pickled(build, "exion.sim.tb_dsc", runs, key="cases", seed=seed,
                             run_name=run_name)

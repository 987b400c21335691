"""``rtl_cau``: the Verilated CAU as a plain function (pytest side), and its payload helpers.

    runs, report = rtl_cau(cfg, [CauCase(mask, sort="popcount"), ...])
    plan = conmerge(cfg, mask, sort=...)
    np.testing.assert_array_equal(runs[0].members, plan.members)
    np.testing.assert_array_equal(runs[0].select, plan.select)

Several masks run in one simulator invocation (the build is shared by the session, see
:mod:`exion.sim.runner`). ``rtl_cau(..., cau_kw={"merge_lanes": 1, "cols_per_cycle": 3})``
runs a CAU generated with other parameters than the defaults: while it is built it is
registered as an extra generator top ``cau_<params>`` (:func:`cau_variant`) so that it gets
its own Verilog, manifest and Verilator build, cached like every other top. The helpers :func:`mask_beats` (mask -> input beats) and
:func:`decode_pass` (emitted payload -> golden ``members`` / ``select``) are shared by the
cocotb bench and the Amaranth-simulator unit tests, so the three agree by construction.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import numpy as np

from exion.config import Config
from exion.golden.conmerge import check_mask, cv_ints

from .runner import rtl_build, run_bench_pickled

__all__ = ["CauCase", "CauRun", "mask_beats", "decode_pass", "rtl_cau", "cau_variant_top",
           "cau_variant"]

#: short names of the CAU constructor keywords in variant top names
_KW_TAGS = {"cols_per_cycle": "p", "merge_lanes": "l", "max_cols": "n", "sort": "s",
            "fifo_depth": "q"}


def cau_variant_top(cau_kw: dict | None) -> str:
    """Generator top name for ``CAU(cfg, **cau_kw)``: ``"cau"`` for the defaults, else e.g.
    ``"cau_l1_p3"`` (the parameters are in the name, so every variant has its own Verilog,
    manifest and Verilator build)."""
    if not cau_kw:
        return "cau"
    bad = set(cau_kw) - set(_KW_TAGS)
    if bad:
        raise ValueError(f"cau_kw: unknown CAU parameter(s) {sorted(bad)}; known: "
                         f"{sorted(_KW_TAGS)}")
    return "cau_" + "_".join(f"{_KW_TAGS[k]}{cau_kw[k]}" for k in sorted(cau_kw))


@contextlib.contextmanager
def cau_variant(cau_kw: dict | None):
    """Yield the top name of ``CAU(cfg, **cau_kw)`` while it is registered in
    ``exion.gen.verilog.TOPS`` (so ``rtl_build``/``generate``/``fpga.synth`` accept it);
    the entry is removed again on exit, so the generator's table and CLI keep their tops."""
    name = cau_variant_top(cau_kw)
    if name == "cau":
        yield name
        return
    from exion.gen import verilog
    from exion.hw.cau import CAU
    kw = dict(cau_kw)
    added = name not in verilog.TOPS
    if added:
        verilog.TOPS[name] = (lambda cfg: CAU(cfg, **kw), f"CAU with {kw}")
    try:
        yield name
    finally:
        if added:
            del verilog.TOPS[name]


@dataclass
class CauCase:
    """One mask through the CAU. ``sort`` is ``"popcount"`` or ``"none"``; ``ways`` the run's
    merge ways (1..cfg.merge_ways, default all of them)."""

    mask: np.ndarray
    sort: str = "popcount"
    name: str = ""
    ways: int | None = None


@dataclass
class CauRun:
    """The passes the RTL emitted for one mask, in golden ``ConMergePlan`` array form."""

    row_block: np.ndarray      # (P,) int32
    members: np.ndarray        # (P, C, m) int32, -1 = empty
    select: np.ndarray         # (P, R, C) int32, -1 = idle
    last: np.ndarray           # (P,) bool: last pass of its row block
    cycles: int                # cycles from the first beat offered to the last pass taken
    pass_cycles: np.ndarray    # (P,) cycle (from the case's start) each pass was taken
    stage_cycles: dict = field(default_factory=dict)  # busy cycles of stages B and C


def mask_beats(cfg: Config, mask, cols_per_cycle: int, sort_none: bool = False,
               runtime_sort: bool = True, ways: int | None = None) -> list[dict]:
    """Input beats of a whole (M, N) mask: row blocks in order, ``cols_per_cycle`` cvs each.

    Lanes beyond N are zero cvs; a block of N = 0 columns still sends one (zero) beat.
    ``runtime_sort``: the beats carry the ``sort`` bit (a CAU generated with
    ``sort="runtime"``). ``ways``: the run's merge ways (checked by
    ``Config.check_merge_ways``; default ``cfg.merge_ways``).
    """
    mask = check_mask(mask)
    ways = cfg.check_merge_ways(ways)
    R, P = cfg.rows, cols_per_cycle
    M, N = mask.shape
    beats = []
    nbeats = max(1, math.ceil(N / P))
    for b in range(math.ceil(M / R)):
        cvs = cv_ints(cfg, mask[b * R:(b + 1) * R]) + [0] * (nbeats * P - N)
        for i in range(nbeats):
            beat = {"cv": cvs[i * P:(i + 1) * P], "last": int(i == nbeats - 1),
                    "block": b % 2**16, "ways": ways}
            if runtime_sort:
                beat["sort"] = int(sort_none)
            beats.append(beat)
    return beats


def decode_pass(cfg: Config, p: dict) -> tuple[np.ndarray, np.ndarray]:
    """(members (C, m), select (R, C)) of one emitted pass, as :class:`golden.Pass` has them.

    A member exists exactly when some DPU of its slot selects it (members are condensed, so
    every member has at least one row); its column is then ``col[c][k]``.
    """
    R, C, m = cfg.rows, cfg.cols, cfg.merge_ways
    select = np.full((R, C), -1, dtype=np.int32)
    for r in range(R):
        for c in range(C):
            s = p["sel"][r][c]
            if s["valid"]:
                select[r, c] = s["idx"]
    members = np.full((C, m), -1, dtype=np.int32)
    for c in range(C):
        for k in range(m):
            if np.any(select[:, c] == k):
                members[c, k] = p["col"][c][k]
    return members, select


def runs_from_passes(cfg: Config, passes: list[dict], pass_cycles, cycles: int,
                     stage_cycles=None) -> CauRun:
    R, C, m = cfg.rows, cfg.cols, cfg.merge_ways
    mem = np.zeros((len(passes), C, m), dtype=np.int32)
    sel = np.zeros((len(passes), R, C), dtype=np.int32)
    for i, p in enumerate(passes):
        mem[i], sel[i] = decode_pass(cfg, p)
    return CauRun(np.array([p["block"] for p in passes], dtype=np.int32), mem, sel,
                  np.array([bool(p["last"]) for p in passes], dtype=bool), int(cycles),
                  np.asarray(pass_cycles, dtype=np.int64), dict(stage_cycles or {}))


def rtl_cau(cfg: Config, cases: list[CauCase], *, seed: int | None = None,
            gaps: float = 0.0, backpressure: float = 0.0, waves: bool = False,
            run_name: str = "cau", progress=None,
            cau_kw: dict | None = None) -> tuple[list[CauRun], dict]:
    """Run ``cases`` through the Verilated CAU (default generation parameters, or
    ``CAU(cfg, **cau_kw)``).

    ``gaps``: probability of an idle input cycle (valid low); ``backpressure``: probability
    that the output's ready is low in a cycle. With both 0 the cycle counts are the CAU's own.
    """
    with cau_variant(cau_kw) as top:
        build = rtl_build(cfg, top, waves=waves, progress=progress)
    outs, report = run_bench_pickled(
        build, "exion.sim.tb_cau",
        [(np.asarray(c.mask, dtype=bool), c.sort, c.ways) for c in cases], key="cases", seed=seed,
        run_name=run_name, params={"gaps": gaps, "backpressure": backpressure})
    runs = [runs_from_passes(cfg, o["passes"], o["pass_cycles"], o["cycles"],
                             o["stage_cycles"]) for o in outs]
    return runs, report

"""``rtl_sparse_gemm``: products through the Verilated CAU -> fetch -> SDUE engine (``hw.gemm``).

    out, runs = rtl_sparse_gemm(cfg, [GemmCase(a, b, mask, prev=..., accumulate=...)])
    np.testing.assert_array_equal(out[0], golden.conmerge.masked_gemm(cfg, a, b, mask, ...))

The host side is plain NumPy (:func:`plan_tiles`): a product is cut into *tiles* that fit one
run of the engine (``hw.gemm.check_setup``; with ``GemmCase.gather`` each tile reduces only
over the K rows some row of the tile's A needs, compacted in IMEM and GMEM: FC2's gathered
W2 rows, a host-side gather): column groups of at most ``omem_depth`` columns
and as many row blocks as IMEM and OMEM hold. Per tile the host writes IMEM (row block ``i``
at ``i * kwords``), GMEM (column ``j`` at ``j << gmem_kbits``) and OMEM (the previous
output), then streams the tile's mask; the engine does the rest. The cocotb bench
(:mod:`exion.sim.tb_gemm`) executes the tiles; nothing else is computed on the host.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from exion.config import CAU_COLS_PER_CYCLE, GEMM_MAX_REGIONS, Config
from exion.errors import ExionError
from exion.golden.conmerge import check_mask
from exion.golden.cycles import engine_compact, engine_k_chunk, engine_plan, engine_striped

from .cau_rtl import mask_beats
from .runner import rtl_build, run_bench_pickled

__all__ = ["GemmCase", "GemmTile", "GemmRun", "plan_tiles", "rtl_sparse_gemm", "engine_model",
           "model_error",
           "GEMM_COLS_PER_CYCLE", "GEMM_MAX_REGIONS"]

#: Generation parameters of the ``gemm`` top as ``exion gen --top gemm`` builds it.
GEMM_COLS_PER_CYCLE = CAU_COLS_PER_CYCLE


@dataclass
class GemmCase:
    """``out = where(mask, a @ b, prev)`` (``accumulate``: ``prev + where(mask, a @ b, 0)``)."""

    a: np.ndarray            # (M, K) signed W-bit
    b: np.ndarray            # (K, N) signed W-bit
    mask: np.ndarray         # (M, N) bool
    prev: np.ndarray | None = None
    accumulate: bool = False
    sort: str = "popcount"
    regions: int | None = None   # WMEM regions the fetch may fill ahead (None: as many as fit)
    name: str = ""
    ways: int | None = None      # the run's merge ways, 1..cfg.merge_ways (None: all)
    dataflow: str = "row-block"  # "row-block" or "col-group" (hw.gemm.DATAFLOWS)
    gb_bytes: int = 0            # global-buffer bytes per cycle of the weight fetch (0: unlimited)
    gather: bool = False         # per tile, reduce only over the K rows some tile row of A needs
    gather_hw: bool = False      # with gather, col-group: B whole in GMEM, the engine gathers
    double_buffer: bool = True   # col-group: several column groups per run, WMEM ping-pong
    group_cols: int | None = None   # col-group: cap on the columns per group (None: a half)
    k_chunk: int | str | None = None   # K-splits: None (fewest), L-words per piece, "auto"
    striped: bool | str = False   # col-group: the striped WMEM map (True, False, "auto")
    compact: bool = False        # drop unneeded columns / K rows first (golden engine_compact)


@dataclass
class GemmTile:
    rows: np.ndarray         # (blocks * R,) original rows, -1 past M
    cols: np.ndarray         # (ncols,) original columns
    setup: dict              # kwords, ncols, regions, accumulate
    flow: dict = field(default_factory=dict)   # col_group, gb_bytes, nblocks
    imem: dict = field(default_factory=dict)   # word address -> (R, L)
    kidx: dict = field(default_factory=dict)   # word address -> L (word, lane) K rows
    gmem: dict = field(default_factory=dict)   # word address -> (L,)
    omem: np.ndarray = None  # (blocks * ncols, R) OMEM contents before the run
    beats: list = field(default_factory=list)  # mask beats (hw.cau mask_layout values)
    keep_omem: bool = False  # a later K-split: OMEM is not written, the run adds into it
    k0: int = 0              # the run's K-split: first L-word of the reduction


@dataclass
class GemmRun:
    result: np.ndarray       # (M, N)
    tile_cycles: list        # busy cycles the RTL counted per tile (mask first offered -> idle)
    tile_passes: list        # passes the SDUE ran per tile
    tiles: int
    tile_stalls: list = field(default_factory=list)   # the engine's stall counter per tile
    tile_words: list = field(default_factory=list)    # L-words the weight fetch moved


def plan_tiles(cfg: Config, case: GemmCase, cols_per_cycle: int = GEMM_COLS_PER_CYCLE,
               max_regions: int = GEMM_MAX_REGIONS) -> list[GemmTile]:
    """The host's memory images and mask beats of every tile of one product (with
    ``case.compact``, of the compacted product, each tile's ``cols`` the original columns)."""
    from exion.hw.gemm import (DATAFLOWS, block_label, check_setup, gather_supported,
                               gmem_kbits)   # the hardware's limits
    a = np.asarray(case.a, dtype=np.int64)
    b = np.asarray(case.b, dtype=np.int64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ExionError(f"sparse gemm: A {a.shape} and B {b.shape} do not chain "
                         f"(need (M, K) and (K, N))")
    M, K = a.shape
    N = b.shape[1]
    mask = check_mask(case.mask, shape=(M, N))
    prev = np.zeros((M, N), np.int64) if case.prev is None else np.asarray(case.prev, np.int64)
    if prev.shape != (M, N):
        raise ExionError(f"sparse gemm: prev has shape {prev.shape}, expected {(M, N)}")
    if case.compact:
        cols, krows, mc, im = engine_compact(mask, (a != 0) if case.gather else None)
        ak, bk = (a, b) if krows is None else (a[:, krows], b[krows])
        sub = dataclasses.replace(case, a=ak, b=bk[:, cols], mask=mc, prev=prev[:, cols],
                                  gather=case.gather and im is not None,
                                  gather_hw=case.gather_hw and im is not None, compact=False)
        tiles = plan_tiles(cfg, sub, cols_per_cycle, max_regions)
        for t in tiles:
            t.cols = cols[t.cols]
        return tiles
    cfg.check_merge_ways(case.ways)   # the run-time m: the engine is built for cfg.merge_ways
    R, L = cfg.rows, cfg.lanes
    if case.dataflow not in DATAFLOWS:
        raise ExionError(f"sparse gemm: dataflow {case.dataflow!r} is not one of "
                         f"{', '.join(DATAFLOWS)}")
    if not isinstance(case.gb_bytes, (int, np.integer)) or not 0 <= case.gb_bytes < 1 << 16:
        raise ExionError(f"sparse gemm: gb_bytes = {case.gb_bytes!r} must be an integer in "
                         f"0..65535 (0 = unlimited)")
    kw = max(1, math.ceil(K / L))
    nblk = math.ceil(M / R)
    colg = case.dataflow == "col-group"
    if case.gather_hw and not (colg and case.gather and gather_supported(cfg)):
        raise ExionError(f"sparse gemm: gather_hw needs dataflow col-group, gather and C * m "
                         f">= L (config {cfg.name!r}: {cfg.cols} * {cfg.merge_ways} vs "
                         f"{cfg.lanes})")
    k_chunk = case.k_chunk
    if isinstance(k_chunk, str):
        if k_chunk != "auto":
            raise ExionError(f"sparse gemm: k_chunk = {k_chunk!r} must be an integer, None "
                             f"or 'auto'")
        k_chunk = engine_k_chunk(
            cfg, mask, K, dataflow=case.dataflow, gb_bytes=int(case.gb_bytes),
            merge_ways=case.ways, sort=case.sort, cols_per_cycle=cols_per_cycle,
            regions=case.regions, double_buffer=case.double_buffer,
            group_cols=case.group_cols,
            input_mask=(a != 0) if case.gather else None, striped=case.striped)
    striped = engine_striped(cfg, mask, K, dataflow=case.dataflow, striped=case.striped,
                             gather=case.gather, double_buffer=case.double_buffer,
                             group_cols=case.group_cols, k_chunk=k_chunk,
                             merge_ways=case.ways, sort=case.sort)
    shapes = engine_plan(cfg, M, N, K, case.dataflow, double_buffer=case.double_buffer,
                         group_cols=case.group_cols, k_chunk=k_chunk, striped=striped)
    kb = gmem_kbits(cfg)
    apad = np.zeros((nblk * R, kw * L), np.int64)
    apad[:M, :K] = a
    bpad = np.zeros((kw * L, N), np.int64)
    bpad[:K] = b
    tiles = []
    for shp in shapes:
        b0, blocks, c0 = shp["b0"], shp["blocks"], shp["c0"]
        k0, ckw = shp["k0"], shp["kwords"]       # this run's K-split (L-words)
        later = k0 > 0                           # adds into the OMEM the earlier splits left
        cols = np.arange(c0, c0 + shp["ncols"])
        n = len(cols)
        gcols = shp["gcols"]
        groups = -(-n // gcols)
        regions = max(1, min(max_regions, 2 * cfg.wmem_words // ckw))
        if case.regions is not None:
            regions = case.regions
        check_setup(cfg, kwords=ckw, ncols=n, blocks=blocks, regions=regions,
                    max_regions=max_regions, col_group=colg,
                    gcols=gcols if groups > 1 else 0, striped=striped)
        rows = np.arange(b0 * R, (b0 + blocks) * R)
        rows = np.where(rows < M, rows, -1)
        ks = slice(k0 * L, (k0 + ckw) * L)
        ta, tbm, tkw = apad[:, ks], bpad[ks], ckw
        if case.gather:   # FC2's gathered W2 rows: the K rows no tile row needs dropped
            kidx = np.flatnonzero(ta[b0 * R:(b0 + blocks) * R].any(axis=0))
            tkw = max(1, math.ceil(kidx.size / L))
            sa, sb = ta, tbm
            ta = np.zeros((apad.shape[0], tkw * L), np.int64)
            ta[:, :kidx.size] = sa[:, kidx]
            tbm = np.zeros((tkw * L, N), np.int64)
            tbm[:kidx.size] = sb[kidx]
            if case.gather_hw:   # B's split stays whole in GMEM; the engine gathers
                units = np.zeros(tkw * L, np.int64)
                units[:kidx.size] = kidx
                tbm = sb
                tkidx = {w: [{"word": int(u) // L, "lane": int(u) % L}
                             for u in units[w * L:(w + 1) * L]] for w in range(tkw)}
        t = GemmTile(rows, cols, {"kwords": tkw, "ncols": n, "regions": regions,
                                  "accumulate": 1 if later else int(case.accumulate)},
                     {"col_group": int(colg), "gb_bytes": int(case.gb_bytes),
                      "nblocks": blocks, "gcols": gcols if groups > 1 else 0,
                      "ngroups": groups, "gather": int(case.gather_hw),
                      "striped": int(striped)},
                     keep_omem=later, k0=k0)
        if case.gather_hw:
            t.kidx = tkidx
        for i in range(blocks):
            blk_a = ta[(b0 + i) * R:(b0 + i + 1) * R]
            for w in range(tkw):
                t.imem[i * tkw + w] = blk_a[:, w * L:(w + 1) * L]
        for j, col in enumerate(cols):
            for w in range(tbm.shape[0] // L):
                t.gmem[(j << kb) + w] = tbm[w * L:(w + 1) * L, col]
        om = np.zeros((blocks * n, R), np.int64)
        for i in range(blocks):
            for r in range(R):
                row = rows[i * R + r]
                if row >= 0:
                    om[i * n:(i + 1) * n, r] = prev[row, cols]
        t.omem = om
        sub = mask[b0 * R:min(M, (b0 + blocks) * R)][:, cols]
        if colg:   # group by group, each group's blocks labelled b | g << gshift
            for g in range(groups):
                part = np.zeros((sub.shape[0], gcols), bool)
                cg = sub[:, g * gcols:(g + 1) * gcols]
                part[:, :cg.shape[1]] = cg
                for beat in mask_beats(cfg, part, cols_per_cycle, case.sort == "none",
                                       True, ways=case.ways):
                    t.beats.append({**beat, "block": block_label(cfg, beat["block"], g)})
        else:
            t.beats = mask_beats(cfg, sub, cols_per_cycle, case.sort == "none", True,
                                 ways=case.ways)
        tiles.append(t)
    return tiles


def assemble(cfg: Config, case: GemmCase, tiles: list[GemmTile], omems: list) -> np.ndarray:
    """The product from every tile's OMEM read back (``(blocks * ncols, R)`` each)."""
    M, N = np.asarray(case.mask).shape
    out = np.zeros((M, N), np.int64) if case.prev is None else \
        np.array(case.prev, dtype=np.int64, copy=True)
    R = cfg.rows
    for t, om in zip(tiles, omems):
        n = len(t.cols)
        for i in range(len(t.rows) // R):
            for r in range(R):
                row = t.rows[i * R + r]
                if row >= 0:
                    out[row, t.cols] = om[i * n:(i + 1) * n, r]
    return out


def rtl_sparse_gemm(cfg: Config, cases: list[GemmCase], *, seed: int | None = None,
                    gaps: float = 0.0, waves: bool = False, run_name: str = "gemm",
                    progress=None, top: str = "gemm"
                    ) -> tuple[list[np.ndarray], list[GemmRun], dict]:
    """Run every case through the Verilated ``gemm`` top; returns outputs and per-tile cycles.

    ``gaps``: probability of an idle cycle on the mask stream (valid low), to show that the
    engine's result does not depend on the mask's arrival timing. ``top``: a generated top
    with the ``gemm`` top's ports (``exion.sim.gemm_gmem``'s engine with GMEM as ports);
    a config with ``gmem_ports`` (GMEM outside the engine, e.g. ``configs/toy_ecp5.toml``)
    runs on that wrapper, since its plain ``gemm`` top has no global-buffer model.
    """
    if cfg.gmem_ports and top == "gemm":
        from .gemm_gmem import gemm_gmem_top
        with gemm_gmem_top() as wrapped:
            return rtl_sparse_gemm(cfg, cases, seed=seed, gaps=gaps, waves=waves,
                                   run_name=run_name, progress=progress, top=wrapped)
    build = rtl_build(cfg, top, waves=waves, progress=progress)
    plans = [plan_tiles(cfg, c) for c in cases]
    outs, report = run_bench_pickled(build, "exion.sim.tb_gemm", plans, key="cases",
                                     seed=seed, run_name=run_name, params={"gaps": gaps})
    results, runs = [], []
    for case, tiles, o in zip(cases, plans, outs):
        res = assemble(cfg, case, tiles, o["omem"])
        results.append(res)
        runs.append(GemmRun(res, o["cycles"], o["passes"], len(tiles), o.get("stalls", []),
                            o.get("words", [])))
    return results, runs, report


def engine_model(cfg: Config, case: GemmCase, cols_per_cycle: int = GEMM_COLS_PER_CYCLE) -> dict:
    """``golden.cycles.engine_cycles`` of a case as :func:`plan_tiles` runs it."""
    from exion.golden.cycles import engine_cycles
    return engine_cycles(cfg, case.mask, np.asarray(case.a).shape[1], dataflow=case.dataflow,
                         gb_bytes=case.gb_bytes, merge_ways=case.ways, sort=case.sort,
                         cols_per_cycle=cols_per_cycle, regions=case.regions,
                         input_mask=np.asarray(case.a) != 0 if case.gather else None,
                         double_buffer=case.double_buffer, group_cols=case.group_cols,
                         k_chunk=case.k_chunk, striped=case.striped, compact=case.compact)


def model_error(cfg: Config, case: GemmCase, run: GemmRun, model: dict | None = None
                ) -> str | None:
    """``None`` when every tile's RTL cycles, stall counter and fetched words equal the engine
    model (:func:`engine_model`, or ``model`` already computed), else the first difference,
    one line."""
    e = engine_model(cfg, case) if model is None else model
    if len(e["tiles"]) != len(run.tile_cycles):
        return f"tiles: RTL ran {len(run.tile_cycles)}, the model plans {len(e['tiles'])}"
    for i, (t, cyc, st, words) in enumerate(zip(e["tiles"], run.tile_cycles, run.tile_stalls,
                                                run.tile_words)):
        if words != t["words"]:
            return f"tile {i}: RTL fetched {words} words, the model {t['words']}"
        if cyc != t["cycles"] or (t["passes"] and st != t["stall"]):
            return (f"tile {i}: RTL {cyc} cycles / {st} stalls, the model {t['cycles']} / "
                    f"{t['stall']}")
    return None


"""The SDUE's Verilog under cocotb on Verilator: products bit-exact with golden, cycles vs model.

Every case of one config runs in a single simulator invocation (module-scoped fixture); each
case is then its own test: the OMEM contents after the product must equal
``golden.conmerge.sdue`` (the block's golden function, = ``execute_plan``; masked outputs
computed, every other position keeping its
previous contents), and the busy cycles the RTL counted must be within 2 % of
``golden.cycles.sdue_cycles`` of the same batches.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from mask_cases import adversarial_masks
import pytest

from exion import PRESETS
from exion.config import load_config
from exion.golden.conmerge import conmerge, dense_plan, masked_gemm, sdue
from exion.sim.program import build_program
from exion.sim.runner import new_seed
from exion.sim.sdue_rtl import rtl_sdue

pytestmark = pytest.mark.rtl

CONFIGS = {
    "toy": PRESETS["toy"],
    # C <= 2 with an IMEM of 1-2 words per side: every product is K-split into passes of
    # kwords <= C run back to back, each accumulating into the outputs the previous one
    # drained 1 or 2 cycles earlier, which the drain reads back before (C = 1) or while
    # (C = 2) that write lands: its forwarding and read-during-write paths (C >= 3 or
    # passes of more than 2 words never need them).
    "toy-c2": PRESETS["toy"].replace(name="toy_c2", cols=2, omem_depth=32, imem_depth=8),
    "toy-c1": PRESETS["toy"].replace(name="toy_c1", cols=1, merge_ways=1, omem_depth=16,
                                     imem_depth=4),
    # OMEM in 2 sub-banks by address (omem_drain, issue 17) on the C = 2 K-split stress: a
    # narrow run's drain sends each entry to its address's sub-bank, so back-to-back
    # accumulating passes forward within a lane, and the host reads pick the sub-bank
    "toy-c2-d2": PRESETS["toy"].replace(name="toy_c2_d2", cols=2, omem_depth=32,
                                        imem_depth=8, omem_drain=2),
    "exion16": PRESETS["exion16"],
}
# Hardware generated for exion16 with m = 1 and 2: each is another multi-minute Verilator
# build, so these run under `make test-long`. The default suite still runs m = 1, 2 and 4
# ConMerge plans on exion16 (its 4 weight buses serve any m <= 4) and m = 1 hardware on toy
# (toy-c1).
LONG_CONFIGS = {
    # the FPGA build of the DPUs (configs/toy_ecp5.toml): MULT18X18D with its input and
    # output registers and a fabric register before the adder tree (+2 cycles); the default
    # suite runs those DPUs in tests/test_dpu_rtl.py and the board's engine in
    # tests/test_gemm_board.py
    "toy-ecp5": load_config(Path(__file__).resolve().parent.parent / "configs" /
                            "toy_ecp5.toml"),
    # the unpipelined DPU datapath (sdue_pipe = false): a non-default build
    "toy-nopipe": PRESETS["toy"].replace(name="toy_nopipe", sdue_pipe=False),
    # generator path m = 1 on the toy array (the default suite has m = 1 in toy-c1)
    "toy-m1": PRESETS["toy"].replace(name="toy_m1", merge_ways=1),
    "exion16-m1": PRESETS["exion16"].replace(name="exion16_m1", merge_ways=1),
    "exion16-m2": PRESETS["exion16"].replace(name="exion16_m2", merge_ways=2),
}
ALL_CONFIGS = {**CONFIGS, **LONG_CONFIGS}


def make_cases(cfg, rng):
    """name -> dict(a, b, plan, prev, accumulate, input_sparse)."""
    R, C, L = cfg.rows, cfg.cols, cfg.lanes
    lo, hi = cfg.wmin, cfg.wmax + 1

    def ops(M, K, N):
        return rng.integers(lo, hi, (M, K)), rng.integers(lo, hi, (K, N))

    def prev(M, N):
        return rng.integers(-(2 ** (cfg.acc_width - 2)), 2 ** (cfg.acc_width - 2), (M, N))

    cases = {}
    a, b = ops(R, 4 * L, C)
    cases["dense_tile"] = dict(a=a, b=b, plan=dense_plan(cfg, R, C), prev=prev(R, C))
    M, K, N = 2 * R + 3, 3 * L + 1, 2 * C + 1          # partial row block, partial beat
    a, b = ops(M, K, N)
    cases["dense_multipass"] = dict(a=a, b=b, plan=dense_plan(cfg, M, N), prev=prev(M, N))
    # extremes: every operand -2^(W-1) at the longest K one pass holds
    K = min(cfg.imem_depth, cfg.k_max)
    a, b = np.full((R, K), cfg.wmin), np.full((K, C), cfg.wmin)
    cases["extreme_kmax"] = dict(a=a, b=b, plan=dense_plan(cfg, R, C), prev=prev(R, C))
    a, b = ops(R, 1, C)                                # minimum K
    cases["k_min"] = dict(a=a, b=b, plan=dense_plan(cfg, R, C), prev=prev(R, C))
    M, K, N = R + 3, 2 * L, 2 * C + 1
    for name, mask in adversarial_masks(cfg, M, N).items():
        a, b = ops(M, K, N)
        cases[f"mask_{name}"] = dict(a=a, b=b, plan=conmerge(cfg, mask), prev=prev(M, N),
                                     mask=mask)
    M, K, N = 2 * R, 4 * L, 3 * C + 2
    for s in (0.5, 0.9, 0.97):
        mask = rng.random((M, N)) >= s
        a, b = ops(M, K, N)
        cases[f"random_{int(s * 100)}pct"] = dict(a=a, b=b, plan=conmerge(cfg, mask),
                                                  prev=prev(M, N), mask=mask)
    for m in range(1, cfg.merge_ways):   # plans with fewer ways than the hardware has
        mask = rng.random((M, N)) >= 0.9
        a, b = ops(M, K, N)
        cases[f"random_90pct_plan_m{m}"] = dict(a=a, b=b, plan=conmerge(cfg, mask, merge_ways=m),
                                                prev=prev(M, N), mask=mask)
    mask = rng.random((M, N)) >= 0.9
    a, b = ops(M, K, N)
    cases["accumulate_sparse"] = dict(a=a, b=b, plan=conmerge(cfg, mask), prev=prev(M, N),
                                      accumulate=True, mask=mask)
    # input-sparse reduction: most L-chunks of A are zero (FC2 delta / P.V after EP)
    M, K, N = 2 * R, 8 * L, 2 * C
    a, b = ops(M, K, N)
    a[:, L:6 * L] = 0
    a[0, 3 * L + 1] = 5
    cases["input_sparse"] = dict(a=a, b=b, plan=dense_plan(cfg, M, N), prev=prev(M, N),
                                 input_sparse=True)
    # K beyond one pass's memory: K-splits accumulate into OMEM (needs K <= k_max)
    per_pass = min(cfg.imem_depth, cfg.wmem_depth // cfg.merge_ways)
    if "k_split" in case_names(cfg):
        K = per_pass + 3 * L
        a, b = ops(R, K, C)
        cases["k_split"] = dict(a=a, b=b, plan=dense_plan(cfg, R, C), prev=prev(R, C))
        # ConMerge + K-splits with enough passes that one row block spans batches: its
        # partial sums must survive the OMEM reload between batches.
        N = min(cfg.omem_depth, 16 * C)
        mask = rng.random((R, N)) >= 0.8
        a, b = ops(R, K, N)
        cases["k_split_sparse"] = dict(a=a, b=b, plan=conmerge(cfg, mask), prev=prev(R, N),
                                       mask=mask)
    return cases


def expected(cfg, case):
    return sdue(cfg, case["a"], case["b"], case["plan"], out=case["prev"],
                        accumulate=case.get("accumulate", False),
                        input_sparse=case.get("input_sparse", False))


def case_names(cfg) -> list[str]:
    """The cases that apply to a config (K-splits need k_max beyond one pass's memory)."""
    names = ["dense_tile", "dense_multipass", "extreme_kmax", "k_min", "mask_all0",
             "mask_all1", "mask_one_bit", "mask_checkerboard", "mask_dense_row",
             "mask_dense_col", "mask_stripes", "random_50pct", "random_90pct", "random_97pct",
             "accumulate_sparse", "input_sparse"]
    names += [f"random_90pct_plan_m{m}" for m in range(1, cfg.merge_ways)]
    per_pass = min(cfg.imem_depth, cfg.wmem_depth // cfg.merge_ways)
    if per_pass + 3 * cfg.lanes <= cfg.k_max:
        names += ["k_split", "k_split_sparse"]
    return names


def _pairs(configs, marks=()):
    return [pytest.param(c, n, id=f"{c}-{n}", marks=list(marks))
            for c in configs for n in case_names(ALL_CONFIGS[c])]


PAIRS = _pairs(CONFIGS) + _pairs(LONG_CONFIGS, [pytest.mark.long])
_SESSIONS: dict = {}


def sdue_session(config_name):
    """Run every case of one config in one simulator invocation (once per test session)."""
    if config_name not in _SESSIONS:
        cfg = ALL_CONFIGS[config_name]
        seed = new_seed()
        print(f"SDUE {cfg.name}: seed {seed} (re-run: EXION_SEED={seed})")
        cases = make_cases(cfg, np.random.default_rng(seed))
        assert sorted(cases) == sorted(case_names(cfg))
        # Every other case loads row r's data into IMEM bank isel[r] of a seeded random
        # permutation, so the i_sw crossbar must route each bank to its row; the others
        # keep the identity.
        perm_rng = np.random.default_rng(seed + 1)
        programs = [build_program(cfg, c["a"], c["b"], c["plan"], prev=c["prev"],
                                  accumulate=c.get("accumulate", False),
                                  input_sparse=c.get("input_sparse", False),
                                  isel=perm_rng.permutation(cfg.rows) if i % 2 else None)
                    for i, c in enumerate(cases.values())]
        if "k_split_sparse" in cases:   # the case must really span batches
            assert len(programs[list(cases).index("k_split_sparse")].batches) > 1
        runs, report = rtl_sdue(cfg, programs, seed=seed, run_name="cases")
        _SESSIONS[config_name] = (cfg, seed, dict(zip(cases, zip(cases.values(), runs))))
    return _SESSIONS[config_name]


@pytest.mark.parametrize("config_name,name", PAIRS)
def test_sdue_matches_golden(config_name, name):
    cfg, seed, results = sdue_session(config_name)
    case, run = results[name]
    want = expected(cfg, case)
    np.testing.assert_array_equal(run.result, want,
                                  err_msg=f"{name} on {cfg.name}, seed {seed}")
    if "mask" in case and not case.get("accumulate"):
        # independent of the plan: the masked outputs are the product, the rest untouched
        mg = masked_gemm(cfg, case["a"], case["b"], case["mask"], out=case["prev"])
        np.testing.assert_array_equal(run.result, mg)


@pytest.mark.parametrize("config_name,name", PAIRS)
def test_sdue_cycles_match_model(config_name, name):
    cfg, seed, results = sdue_session(config_name)
    case, run = results[name]
    assert len(run.batch_cycles) == len(run.model_cycles)
    for got, model in zip(run.batch_cycles, run.model_cycles):
        assert abs(got - model) <= 0.02 * model, (
            f"{name} on {cfg.name}: RTL {got} cycles vs model {model} (batches "
            f"{run.batch_cycles} vs {run.model_cycles}), seed {seed}")
    # the RTL ran the plan's passes (times the K-splits)
    if not case.get("input_sparse"):
        per_pass = min(cfg.imem_depth, cfg.wmem_depth // cfg.merge_ways)
        splits = math.ceil(case["a"].shape[1] / per_pass)
        assert sum(len(k) for k in run.k_words) == case["plan"].n_passes * splits


def test_sdue_descriptor_gaps_and_back_pressure():
    """Random idle cycles between descriptors change nothing but the time taken."""
    cfg = PRESETS["toy"]
    seed = new_seed()
    rng = np.random.default_rng(seed)
    M, K, N = 2 * cfg.rows + 1, 3 * cfg.lanes, 3 * cfg.cols + 1
    mask = rng.random((M, N)) >= 0.6
    a = rng.integers(cfg.wmin, cfg.wmax + 1, (M, K))
    b = rng.integers(cfg.wmin, cfg.wmax + 1, (K, N))
    prev = rng.integers(-1000, 1000, (M, N))
    plan = conmerge(cfg, mask)
    prog = build_program(cfg, a, b, plan, prev=prev)
    runs, _ = rtl_sdue(cfg, [prog], seed=seed, gaps=True, run_name="gaps")
    np.testing.assert_array_equal(runs[0].result, sdue(cfg, a, b, plan, out=prev),
                                  err_msg=f"seed {seed}")
    assert runs[0].cycles >= runs[0].model


def test_program_isel_places_rows_in_their_banks():
    """build_program's isel: row r's data goes to IMEM bank isel[r], and only permutations."""
    from exion.errors import ExionError
    cfg = PRESETS["toy"]
    R, L = cfg.rows, cfg.lanes
    rng = np.random.default_rng(7)
    a = rng.integers(cfg.wmin, cfg.wmax + 1, (R, 2 * L))
    b = rng.integers(cfg.wmin, cfg.wmax + 1, (2 * L, cfg.cols))
    plan = dense_plan(cfg, R, cfg.cols)
    perm = rng.permutation(R)
    ident = build_program(cfg, a, b, plan)
    moved = build_program(cfg, a, b, plan, isel=perm)
    d0, d1 = ident.batches[0], moved.batches[0]
    assert [d["isel"] for d in d1.descs] == [list(perm)] * len(d1.descs)
    for addr, words in d0.imem.items():
        np.testing.assert_array_equal(d1.imem[addr][perm], words)   # bank perm[r] = row r
    for bad in ([0] * R, list(range(R - 1)), list(range(1, R + 1))):
        with pytest.raises(ExionError, match="isel must be a permutation"):
            build_program(cfg, a, b, plan, isel=bad)


def test_boxed_dpus_are_the_elaborated_circuit():
    """The generator emits the DPU array as R x C instances of one DPU module (the default,
    ``box_dpus``); the FPGA flows read it with every DPU elaborated in place. Both builds run
    the same seeded toy cases: the same OMEM contents (= golden) and the same cycles. The
    boxed file holds the DPU module once and an instance of it per DPU."""
    from exion.gen.verilog import dpu_module_name, generate_shared

    cfg, seed, results = sdue_session("toy")
    n = cfg.rows * cfg.cols
    boxed = generate_shared(cfg, "sdue").verilog.read_text()
    flat = generate_shared(cfg, "sdue", box_dpus=False).verilog.read_text()
    dpu = dpu_module_name("sdue")
    assert boxed.count(f"module {dpu}(") == 1 and boxed.count(f"{dpu} ") == n
    assert dpu not in flat
    runs, _ = rtl_sdue(cfg, [run.program for _, run in results.values()], seed=seed,
                       run_name="flat", box_dpus=False)
    for (name, (case, run)), got in zip(results.items(), runs):
        np.testing.assert_array_equal(got.result, expected(cfg, case),
                                      err_msg=f"{name}, elaborated DPUs, seed {seed}")
        np.testing.assert_array_equal(run.result, got.result,
                                      err_msg=f"{name}, boxed vs elaborated, seed {seed}")
        assert got.batch_cycles == run.batch_cycles, (name, seed)

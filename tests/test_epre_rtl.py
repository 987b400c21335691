"""The EPRE's emitted Verilog, Verilated, under cocotb against golden.eager_predict.

One build per preset (the default sizes: n_max = 256, d_max = min(1152, k_max),
dh_max = 72); each test runs many cases in one simulator invocation. Every case is compared
stage by stage (Qh, Kh, Sh, score mask, dominant, key_needed, k_needed) and its busy cycles
must equal ``golden.cycles.epre_run_cycles`` exactly (the 2 % contract holds a fortiori).
"""

import math

import numpy as np
import pytest

from exion import PRESETS
from exion.golden.cycles import epre_cycles, epre_run_cycles, gemm_cycles
from exion.golden.conmerge import dense_plan
from exion.sim.epre_rtl import rtl_predict_many

pytestmark = pytest.mark.rtl

FIELDS = ("qh", "kh", "sh", "score_mask", "dominant", "key_needed", "k_needed")


def check(runs, cycles=True):
    for r in runs:
        for f in FIELDS:
            np.testing.assert_array_equal(getattr(r, f), getattr(r.golden, f),
                                          err_msg=f"case {r.name}: {f}")
        if cycles:
            assert r.cycles == r.model_cycles, f"case {r.name}: cycles"


def cases(cfg, seed):
    rng = np.random.default_rng(seed)
    lo, hi = cfg.wmin, cfg.wmax + 1
    L = cfg.lanes

    def rnd(*shape, a=lo, b=hi):
        return rng.integers(a, b, size=shape)

    n, d, dh = 37, 3 * L + 5, L + 3             # N_k, d, d_head not multiples of anything
    x, wq, wk = rnd(n, d), rnd(d, dh), rnd(d, dh)
    out = [dict(name=f"random-k{k}", x=x, wq=wq, wk=wk, k=k, q_th_int=q)
           for k, q in ((0.05, 4000), (0.2, None), (0.5, 20000), (0.8, 0), (1.0, 1 << 40))]
    out += [
        dict(name="random-keep_all", x=x, wq=wq, wk=wk, k=0.2, q_th_int=2000,
             polarity="keep_all"),
        dict(name="random-lod-mode", x=rnd(11, d), wq=wq, wk=wk, k=0.5, q_th_int=100,
             lod_terms=1),
        dict(name="all-zeros", x=np.zeros((n, d), int), wq=np.zeros((d, dh), int),
             wk=np.zeros((d, dh), int), k=0.2, q_th_int=0),
        # identical tokens: every score of a row is equal -> keys 0..kN-1, gap 0
        dict(name="all-equal-scores", x=np.repeat(rnd(1, d), 29, axis=0), wq=wq, wk=wk,
             k=0.5, q_th_int=1),
        # tiny values: many equal scores around the kN-th place
        dict(name="ties-at-kth", x=rnd(n, d, a=-1, b=2), wq=rnd(d, dh, a=-1, b=2),
             wk=rnd(d, dh, a=-1, b=2), k=0.2, q_th_int=3),
        dict(name="min-everywhere", x=np.full((n, d), lo), wq=np.full((d, dh), lo),
             wk=np.full((d, dh), lo), k=0.8, q_th_int=0),
        dict(name="min-everywhere-saturating", x=np.full((5, d), lo), wq=np.full((d, dh), lo),
             wk=np.full((d, dh), hi - 1), k=0.5, shift_q=2, shift_k=0),
    ]
    # a single dominant key: token 7 is large and aligned with every query
    xd = rnd(n, d, a=-30, b=30)
    xd[7] = hi - 1
    wd = np.abs(rnd(d, dh, a=-50, b=50))
    out.append(dict(name="single-dominant-key", x=xd, wq=wd, wk=wd, k=0.05, q_th_int=1000))
    out.append(dict(name="cross-attention", x=rnd(5, d), x_kv=rnd(21, d), wq=wq, wk=wk,
                    k=0.2, q_th_int=500))
    out.append(dict(name="one-key", x=rnd(4, 9), x_kv=rnd(1, 9), wq=rnd(9, 2), wk=rnd(9, 2),
                    k=0.0, q_th_int=9))
    out.append(dict(name="one-token", x=rnd(1, 2), wq=rnd(2, 1), wk=rnd(2, 1), k=1.0))
    return out


@pytest.fixture(params=[pytest.param("exion16", marks=pytest.mark.long), "toy"],
                ids=lambda n: n)
def preset(request):
    """Both presets; exion16's default EPRE (32 units x 96 lanes, 32 selectors, issue 18)
    takes over 25 minutes to generate, so its builds run under ``make test-long``. The
    streamed-selector datapath at exion16 widths (5 units and selectors) is checked in the
    Amaranth simulator by ``tests/test_epre.py::test_epre_amaranth_matches_golden[exion16]``,
    other provisionings by ``test_epre_provisioned_matches_golden``, in the default suite."""
    return PRESETS[request.param]


def test_epre_rtl_bit_exact_and_cycles(preset):
    runs, report = rtl_predict_many(preset, cases(preset, 11), run_name="cases")
    check(runs)
    assert report["passed"] is True and report["jobs"] == len(runs)
    names = {r.name for r in runs}
    assert {"random-k0.05", "random-k1.0", "ties-at-kth", "single-dominant-key"} <= names
    dom = next(r for r in runs if r.name == "single-dominant-key")
    assert dom.dominant.any() and dom.key_needed[7]
    assert next(r for r in runs if r.name == "all-equal-scores").score_mask[:, :15].all()


def exact_cases(cfg, seed):
    """Exact keys (``k_exact``, run flag ``k_given``): the host writes K into the Kh banks."""
    rng = np.random.default_rng(seed)
    lo, hi = cfg.wmin, cfg.wmax + 1
    L = cfg.lanes
    n, d, dh = 37, 3 * L + 5, L + 3
    x, wq = rng.integers(lo, hi, (n, d)), rng.integers(lo, hi, (d, dh))
    return [
        dict(name="exact-random", x=x, wq=wq, wk=None, k=0.05, q_th_int=4000,
             k_exact=rng.integers(lo, hi, (n, dh))),
        dict(name="exact-more-keys", x=x[:5], wq=wq, wk=None, k=0.5, q_th_int=None,
             k_exact=rng.integers(lo, hi, (70, dh))),
        dict(name="exact-zeros", x=x, wq=wq, wk=None, k=0.2, q_th_int=0,
             k_exact=np.zeros((n, dh), int)),
        dict(name="exact-extremes", x=np.full((n, d), lo), wq=np.full((d, dh), hi - 1),
             wk=None, k=0.8, shift_q=4, k_exact=np.where(rng.random((n, dh)) < 0.5, lo, hi - 1)),
        dict(name="exact-one-key", x=x[:4, :9], wq=wq[:9, :2], wk=None, k=0.0, q_th_int=9,
             k_exact=rng.integers(lo, hi, (1, 2))),
    ]


def test_epre_rtl_exact_keys(preset):
    # exact-key runs between ordinary ones: Kh from the host, then from stage 1 again
    plain = cases(preset, 13)
    exact = exact_cases(preset, 14)
    runs, _ = rtl_predict_many(preset, [plain[0]] + exact + [plain[2]], run_name="exact_keys")
    check(runs)                        # stage by stage and cycles (k_given: no key groups)
    for r, c in zip(runs[1:-1], exact):
        np.testing.assert_array_equal(r.kh, c["k_exact"], err_msg=r.name)   # the host's K


def test_epre_rtl_sub_runs(preset):
    """Sub-runs (issue 19, run field ``q_base``): X holds every row, a run scores the queries
    from a multiple of the units on, with the whole head's stage-1 shifts; predicted and
    exact keys. Each sub-run bit-exact with cycles equal to the model, and the sub-runs'
    rows are the whole run's rows (masks, dominant flags, Qh): the split changes nothing
    the SDUE sees. A run that ignored ``q_base`` scores rows 0.. again and fails it."""
    rng = np.random.default_rng(15)
    print("sub-run cases: seed 15")
    lo, hi = preset.wmin, preset.wmax + 1
    U, L = preset.epre_unit_count, preset.lanes
    n, d, dh = 2 * U + 5, 2 * L + 3, L + 1
    x, wq, wk = (rng.integers(lo, hi, sh) for sh in ((n, d), (d, dh), (d, dh)))
    kx = rng.integers(lo, hi, (n, dh))
    cuts = [(0, U), (U, 2 * U), (2 * U, n)]
    base = dict(x=x, wq=wq, k=0.3, q_th_int=3000)
    cases = []
    for tag, extra in (("pred", dict(wk=wk)), ("exact", dict(wk=None, k_exact=kx))):
        cases.append(dict(name=f"{tag}-whole", **base, **extra))
        cases += [dict(name=f"{tag}-rows{a}-{b}", q_rows=(a, b), **base, **extra)
                  for a, b in cuts]
    runs, _ = rtl_predict_many(preset, cases, run_name="sub_runs")
    check(runs)
    for i in (0, len(cuts) + 1):
        whole, parts = runs[i], runs[i + 1:i + 1 + len(cuts)]
        for f in ("score_mask", "dominant", "qh"):
            np.testing.assert_array_equal(np.concatenate([getattr(p, f) for p in parts]),
                                          getattr(whole, f), err_msg=f"{whole.name}: {f}")
        assert parts[1].qh.shape[0] == U


def test_epre_rtl_backpressure(preset):
    sel = [c for c in cases(preset, 12) if c["name"] in
           ("random-k0.5", "random-keep_all", "ties-at-kth", "cross-attention")]
    runs, _ = rtl_predict_many(preset, sel, backpressure=True, run_name="backpressure")
    check(runs, cycles=False)   # mask ready is random: cycles include the waits


def dit_head(cfg, seed):
    rng = np.random.default_rng(seed)
    T, d, dh = 256, 1152, 72
    x = rng.integers(-300, 300, size=(T, d))
    wq = rng.integers(-300, 300, size=(d, dh))
    wk = rng.integers(-300, 300, size=(d, dh))
    return dict(name="dit-xl2-head", x=x, wq=wq, wk=wk, k=0.2, q_th_int=1 << 20)


@pytest.mark.long
def test_epre_rtl_dit_head_exion16():
    """The DiT-XL/2 head (256 tokens, d = 1152, d_head = 72) on exion16: bit-exact, cycles
    equal to the model, and the figures next to the exact Q.K^T on the SDUE."""
    from exion import PRESETS
    cfg = PRESETS["exion16"]
    runs, report = rtl_predict_many(cfg, [dit_head(cfg, 5)], tap=False, run_name="dit")
    r = runs[0]
    r.sh = r.golden.sh                      # no score tap on this long run
    check([r])
    assert abs(r.cycles - r.model_cycles) <= 0.02 * r.model_cycles
    assert r.cycles == epre_run_cycles(cfg, 256, 256, 1152, 72)
    assert epre_cycles(cfg, 256, 1152, 1, 72)["total"] == r.cycles
    qk = gemm_cycles(cfg, 72, dense_plan(cfg, 256, 256))
    # 256 passes of 16 words plus the array's fill and drain (the SDUE's own tests pin it)
    assert qk.compute == 256 * 16 and 0 < qk.sdue_cycles - qk.compute < 64
    assert r.cycles > qk.sdue_cycles     # the prediction costs more than one exact Q.K^T
    assert math.isfinite(r.sparsity)


@pytest.mark.long
@pytest.mark.parametrize("prov", [dict(name="toy_epre_s", epre_units=4, epre_lanes=8,
                                       epre_selectors=4),
                                  dict(name="toy_epre_r", epre_units=4, epre_lanes=3,
                                       epre_selectors=3)],
                         ids=["streamed-U4-Le8-S4", "rounds-U4-Le3-S3"])
def test_epre_rtl_provisioned(prov):
    """Issue 18 on Verilator: a toy EPRE provisioned with S = U (streamed insertion) and with
    S < U (rounds), every case bit-exact and cycles == model."""
    from exion import PRESETS
    cfg = PRESETS["toy"].replace(**prov)
    runs, report = rtl_predict_many(cfg, cases(cfg, 13), run_name="provisioned")
    check(runs)
    assert report["passed"] is True


# radix: exion16's selector kind; 4 bits a pass is its default (issue 19), 1 the design
# before: the default suite runs the default on Verilator, make test-long the other
@pytest.mark.parametrize("bits", [4, pytest.param(1, marks=pytest.mark.long)])
def test_epre_rtl_radix_toy(bits):
    """Issue 18: the radix selector kind on Verilator (toy, U = S = 3 radix selectors of
    P = 4 ports, ``bits`` threshold bits a pass): every case bit-exact, cycles == the model
    of that kind (and != the insertion kind's, the mutation the model must not make); one
    back-pressured run."""
    from exion import PRESETS
    cfg = PRESETS["toy"].replace(name=f"toy_radix_b{bits}", epre_selector_kind="radix",
                                 epre_selectors=3, epre_radix_ports=4, epre_radix_bits=bits)
    cs = cases(cfg, 17)
    runs, report = rtl_predict_many(cfg, cs, run_name="radix")
    check(runs)
    assert report["passed"] is True and report["jobs"] == len(runs)
    for c, r in zip(cs, runs):
        n_q, n_k = r.score_mask.shape
        d, dh = c["wq"].shape
        assert r.cycles == epre_run_cycles(cfg, n_q, n_k, d, dh)
        assert r.cycles != epre_run_cycles(cfg, n_q, n_k, d, dh, kind="insertion"), r.name
    sel = [c for c in cases(cfg, 18) if c["name"] in ("random-k0.5", "ties-at-kth",
                                                      "cross-attention")]
    bp, _ = rtl_predict_many(cfg, sel, backpressure=True, run_name="radix-backpressure")
    check(bp, cycles=False)


@pytest.mark.long   # the boxed Verilog's structure: tests/test_epre_hier.py (default suite)
def test_epre_rtl_boxed_units_toy():
    """Issue 22: the Verilog that hierarchical synthesis reads (``box_epre_units``: the U
    units as instances of ``exion_epre_unit``, that module appended) is the same circuit:
    every case bit-exact, cycles == model."""
    from exion import PRESETS
    cfg = PRESETS["toy"]
    runs, report = rtl_predict_many(cfg, cases(cfg, 11), run_name="boxed", box_epre_units=True)
    check(runs)
    assert report["passed"] is True and report["jobs"] == len(runs)

"""The CFSE's emitted Verilog, Verilated, under cocotb against golden.cfse.

One build per preset; each test runs many cases in one simulator invocation. Every case is
compared bit-exactly with its golden function (``gelu_fx``, ``gelu_requant``, ``softmax_fx``,
``layernorm_fx``); runs without idle input cycles or output stalls must also take exactly
the cycles of ``golden.cfse_cycles``. Random data and timing are seeded: the seed is printed
and ``EXION_SEED=N`` re-runs it.
"""

import numpy as np
import pytest

from exion import PRESETS
from exion.golden.cfse import FX_MAX, FX_MIN, GeluParams, gelu_params
from exion.sim.cfse_rtl import rtl_cfse_many
from exion.sim.runner import new_seed

pytestmark = pytest.mark.rtl


def seeded():
    seed = new_seed()
    print(f"seed {seed} (re-run with EXION_SEED={seed})")
    return seed, np.random.default_rng(seed)


def check(runs, cycles=True):
    for r in runs:
        np.testing.assert_array_equal(r.y, r.golden, err_msg=f"case {r.name}")
        if cycles:
            assert r.cycles == r.model_cycles, f"case {r.name}: cycles {r.cycles} != model " \
                                               f"{r.model_cycles}"


def n_max(cfg):
    return cfg.cfse_n_max


def gelu_cases(cfg, rng):
    lim = 1 << (cfg.acc_width - 1)
    acc = np.concatenate([[0, 1, -1, lim - 1, -lim], rng.integers(-lim, lim, size=600),
                          rng.integers(-(1 << 20), 1 << 20, size=400)])
    p_dit = gelu_params(3.1e-7, 4.0 / cfg.wmax)
    return [
        dict(name="gelu-all-65536", fn="gelu", x=np.arange(FX_MIN, FX_MAX + 1)),
        dict(name="gelu-zeros", fn="gelu", x=np.zeros((3, 5), int)),
        dict(name="gelu-extremes", fn="gelu", x=np.array([[FX_MIN, FX_MAX], [FX_MAX, FX_MIN]])),
        dict(name="gelu-requant-dit", fn="gelu", x=acc, params=p_dit),
        dict(name="gelu-requant-saturating", fn="gelu", x=acc,
             params=GeluParams(32767, 0, 32767, 0)),
        dict(name="gelu-requant-shift62", fn="gelu", x=acc, params=GeluParams(32767, 62, 1, 62)),
        dict(name="gelu-requant-random", fn="gelu", x=acc[:300],
             params=GeluParams(int(rng.integers(0, 1 << 15)), int(rng.integers(0, 40)),
                               int(rng.integers(0, 1 << 15)), int(rng.integers(0, 30)))),
        dict(name="gelu-requant-mult0", fn="gelu", x=acc[:50], params=GeluParams(0, 3, 0, 5)),
    ]


def softmax_cases(cfg, rng):
    R, nm = cfg.rows, n_max(cfg)
    huge = rng.integers(-3000, 3000, size=(2, 40))
    huge[:, 17] = FX_MAX
    return [
        dict(name="softmax-zeros", fn="softmax", x=np.zeros((2, 9), int)),
        dict(name="softmax-extremes", fn="softmax",
             x=np.array([[FX_MIN, FX_MAX, FX_MIN], [FX_MAX, FX_MAX, FX_MIN],
                         [FX_MIN, FX_MIN, FX_MIN]])),
        dict(name="softmax-one-huge", fn="softmax", x=huge),
        dict(name="softmax-equal", fn="softmax", x=np.full((3, 21), -777)),
        dict(name="softmax-n1", fn="softmax", x=np.array([[5], [FX_MIN], [FX_MAX]])),
        dict(name="softmax-nmax", fn="softmax", x=rng.integers(-20000, 20000, size=(2, nm))),
        dict(name="softmax-tile", fn="softmax",
             x=np.clip(np.rint(rng.normal(0, 2.5, (R, 72)) * 2048), FX_MIN, FX_MAX).astype(int)),
        dict(name="softmax-full-range", fn="softmax",
             x=rng.integers(FX_MIN, FX_MAX + 1, size=(R, 64))),
        dict(name="softmax-3d", fn="softmax", x=rng.integers(-9000, 9000, size=(2, 3, 13))),
        # many short rows: the ring buffer and row FIFOs must never throttle (exact cycles)
        dict(name="softmax-many-rows", fn="softmax", x=rng.integers(-9000, 9000, size=(150, 2))),
    ]


def layernorm_cases(cfg, rng):
    R, nm = cfg.rows, n_max(cfg)

    def gb(n, lo=-4096, hi=4096):
        return rng.integers(lo, hi, size=n), rng.integers(lo, hi, size=n)

    g64, b64 = gb(64)
    gx, bx = np.array([FX_MIN, FX_MAX] * 16), np.array([FX_MAX, FX_MIN] * 16)
    gm, bm = gb(nm)
    const = np.full((3, 64), 1234)
    const[1] = FX_MIN
    const[2] = FX_MAX
    return [
        dict(name="ln-zeros", fn="layernorm", x=np.zeros((2, 64), int), gamma=g64, beta=b64),
        dict(name="ln-constant-var0", fn="layernorm", x=const, gamma=g64, beta=b64),
        dict(name="ln-extremes-saturating", fn="layernorm",
             x=np.array([[FX_MIN] * 31 + [FX_MAX], [FX_MAX, FX_MIN] * 16]), gamma=gx, beta=bx),
        dict(name="ln-n1", fn="layernorm", x=np.array([[7], [FX_MIN]]), gamma=[2048],
             beta=[-5]),
        dict(name="ln-nmax", fn="layernorm", x=rng.integers(FX_MIN, FX_MAX + 1, size=(2, nm)),
             gamma=gm, beta=bm),
        dict(name="ln-tile", fn="layernorm",
             x=np.clip(np.rint(rng.normal(0.3, 1.5, (R, 64)) * 2048), FX_MIN, FX_MAX).astype(int),
             gamma=g64, beta=b64),
        dict(name="ln-small-spread-eps", fn="layernorm",
             x=rng.integers(-3, 4, size=(R, 64)), gamma=g64, beta=b64, eps_q=12345),
        dict(name="ln-many-rows-n1", fn="layernorm", x=rng.integers(-9000, 9000, size=(300, 1)),
             gamma=g64[:1], beta=b64[:1]),
        dict(name="ln-many-rows", fn="layernorm",
             x=rng.integers(-9000, 9000, size=(60, cfg.lanes + 1)),
             gamma=g64[:cfg.lanes + 1], beta=b64[:cfg.lanes + 1]),
        dict(name="ln-big-eps", fn="layernorm", x=rng.integers(-9000, 9000, size=(3, 50)),
             gamma=g64[:50], beta=b64[:50], eps_q=(1 << 48) - 1),
    ]


def all_cases(cfg, rng):
    return gelu_cases(cfg, rng) + softmax_cases(cfg, rng) + layernorm_cases(cfg, rng)


def test_cfse_rtl_bit_exact_and_cycles(preset):
    """Directed and seeded random cases of all three units; cycles equal the model."""
    seed, rng = seeded()
    runs, report = rtl_cfse_many(preset, all_cases(preset, rng), seed=seed, run_name="cases")
    check(runs)
    assert report["passed"] is True and report["jobs"] == len(runs)
    sm = {r.name: r for r in runs}
    assert (sm["softmax-n1"].y == 32768).all()
    assert (sm["softmax-equal"].y == sm["softmax-equal"].y[0, 0]).all()
    assert sm["softmax-one-huge"].y[:, 17].min() == 32768
    assert (sm["ln-constant-var0"].y == sm["ln-constant-var0"].golden).all()


def test_cfse_rtl_backpressure_and_gaps(preset):
    """Random idle input cycles and output stalls on every unit: nothing lost, bit-exact."""
    seed, rng = seeded()
    pick = ("gelu-extremes", "gelu-requant-dit", "softmax-one-huge", "softmax-n1",
            "softmax-tile", "ln-constant-var0", "ln-n1", "ln-tile")
    cases = [dict(c, gaps=g, stall=s) for c in all_cases(preset, rng) if c["name"] in pick
             for g, s in ((0.3, 0.5), (0.0, 0.8))]
    cases = [dict(c, name=f"{c['name']}-g{c['gaps']}-s{c['stall']}") for c in cases]
    runs, _ = rtl_cfse_many(preset, cases, seed=seed, run_name="backpressure")
    check(runs, cycles=False)
    assert any(r.cycles > r.model_cycles for r in runs)


def long_cases(cfg, rng):
    """Rows longer than n_max (restreamed three times), up to the golden limits, mixed with
    short rows in one run (the mode follows the row length job by job)."""
    nm = n_max(cfg)

    def gb(n):
        return rng.integers(FX_MIN, FX_MAX + 1, size=n), rng.integers(-4096, 4096, size=n)

    huge = rng.integers(-3000, 3000, size=(2, nm + 7))
    huge[0, 5] = FX_MAX
    huge[1, -1] = FX_MAX
    const = np.full((3, nm + 3), 1234)
    const[1], const[2] = FX_MIN, FX_MAX
    g1, b1 = gb(nm + 1)
    g3, b3 = gb(nm + 3)
    gl, bl = gb(1 << 14)
    lhuge = rng.integers(-100, 100, size=(1, nm + 2))
    lhuge[0, 9] = FX_MAX
    return [
        dict(name="sm-short-before", fn="softmax", x=rng.integers(-9000, 9000, size=(3, 7))),
        dict(name="sm-long-nmax+1", fn="softmax", x=rng.integers(-20000, 20000, size=(2, nm + 1))),
        dict(name="sm-long-1000", fn="softmax", x=rng.integers(-9000, 9000, size=(2, 1000))),
        dict(name="sm-long-65535", fn="softmax", x=rng.integers(FX_MIN, FX_MAX + 1,
                                                              size=(1, 65535))),
        dict(name="sm-long-65535-zeros", fn="softmax", x=np.zeros((1, 65535), int)),
        dict(name="sm-long-one-huge", fn="softmax", x=huge),
        dict(name="sm-long-equal", fn="softmax", x=np.full((2, nm + 3), -777)),
        dict(name="sm-short-after", fn="softmax", x=rng.integers(-9000, 9000, size=(4, nm))),
        dict(name="ln-long-nmax+1", fn="layernorm", x=rng.integers(FX_MIN, FX_MAX + 1,
                                                                   size=(2, nm + 1)),
             gamma=g1, beta=b1),
        dict(name="ln-short-between", fn="layernorm", x=rng.integers(-9000, 9000, size=(3, 9)),
             gamma=g1[:9], beta=b1[:9]),
        dict(name="ln-long-16384", fn="layernorm", x=rng.integers(FX_MIN, FX_MAX + 1,
                                                                  size=(1, 1 << 14)),
             gamma=gl, beta=bl, eps_q=77),
        dict(name="ln-long-constant-var0", fn="layernorm", x=const, gamma=g3, beta=b3),
        dict(name="ln-long-one-huge", fn="layernorm", x=lhuge, gamma=gl[:nm + 2],
             beta=bl[:nm + 2]),
    ]


@pytest.mark.parametrize("preset", [pytest.param(PRESETS["exion16"], marks=pytest.mark.long),
                                    PRESETS["toy"]], ids=["exion16", "toy"])
def test_cfse_rtl_long_rows(preset):
    """Long-row (restream) mode on both presets (exion16 under make test-long): bit-exact,
    cycles equal the model, also with random idle input cycles and output stalls."""
    seed, rng = seeded()
    cases = long_cases(preset, rng)
    pick = ("sm-long-nmax+1", "sm-long-one-huge", "ln-long-nmax+1", "ln-long-constant-var0")
    cases += [dict(c, name=f"{c['name']}-g0.3-s0.5", gaps=0.3, stall=0.5) for c in cases
              if c["name"] in pick]
    runs, report = rtl_cfse_many(preset, cases, seed=seed, run_name="long")
    check([r for r in runs if "-g0.3" not in r.name])
    check([r for r in runs if "-g0.3" in r.name], cycles=False)
    nm = n_max(preset)
    by = {r.name: r for r in runs}
    assert by["sm-long-nmax+1"].restream and not by["sm-short-after"].restream
    w = -(-(nm + 1) // preset.lanes)
    assert by["sm-long-nmax+1"].cycles == 2 * (3 * w + 29 - 21) + 21
    hy = by["sm-long-one-huge"].y
    assert hy[0, 5] == hy[0].max() > 32000 and hy[1, -1] == hy[1].max() > 32000
    assert (by["sm-long-65535-zeros"].y == 1).all()     # 2**15 / 65535 rounds to 1
    assert any(r.cycles > r.model_cycles for r in runs if "-g0.3" in r.name)


@pytest.mark.long
def test_cfse_rtl_random_sweep(preset):
    """Long seeded sweep: random row lengths 1..n_max and (every fourth case) long rows
    n_max + 1 .. min(4 n_max, 16384), spreads, gamma/beta and GELU params, half of the cases
    with random timing."""
    seed, rng = seeded()
    nm = n_max(preset)
    cases = []
    for i in range(24):
        n = int(rng.integers(1, nm + 1)) if i % 3 else int(rng.integers(1, 3 * preset.lanes))
        if i % 4 == 3:
            n = int(rng.integers(nm + 1, min(4 * nm, 1 << 14) + 1))
        rows = int(rng.integers(1, 2 * preset.rows))
        spread = float(rng.choice([0.05, 0.5, 2.0, 8.0]))
        x = np.clip(np.rint(rng.normal(0, spread, (rows, n)) * 2048), FX_MIN, FX_MAX)
        x = x.astype(int)
        timing = dict(gaps=0.2, stall=0.3) if i % 2 else {}
        cases.append(dict(name=f"sm{i}", fn="softmax", x=x, **timing))
        cases.append(dict(name=f"ln{i}", fn="layernorm", x=x,
                          gamma=rng.integers(FX_MIN, FX_MAX + 1, size=n),
                          beta=rng.integers(FX_MIN, FX_MAX + 1, size=n),
                          eps_q=int(rng.integers(1, 1 << 20)), **timing))
        lim = 1 << (preset.acc_width - 1)
        cases.append(dict(name=f"gelu{i}", fn="gelu", x=rng.integers(-lim, lim, size=500),
                          params=GeluParams(int(rng.integers(0, 1 << 15)),
                                            int(rng.integers(0, 63)),
                                            int(rng.integers(0, 1 << 15)),
                                            int(rng.integers(0, 63))), **timing))
    runs, _ = rtl_cfse_many(preset, cases, seed=seed, run_name="sweep")
    for r in runs:
        np.testing.assert_array_equal(r.y, r.golden, err_msg=f"case {r.name}")


def test_cli_sim_cfse_runs_and_detects_mismatch(cli_run, tmp_path, monkeypatch):
    """``exion sim cfse`` on toy: a bit-exact layer norm (figures in the report), then the
    same run against a deliberately wrong golden result must fail with exit code 1."""
    import json

    from exion.sim import cfse_rtl
    rng = np.random.default_rng(3)
    x, g, b = rng.integers(-6000, 6000, (4, 20)), rng.integers(-3000, 3000, 20), \
        rng.integers(-3000, 3000, 20)
    for k, v in (("x", x), ("g", g), ("b", b)):
        np.save(tmp_path / f"{k}.npy", v)
    argv = ["sim", "cfse", "--config", "toy", "--fn", "layernorm", "--x", str(tmp_path / "x.npy"),
            "--gamma", str(tmp_path / "g.npy"), "--beta", str(tmp_path / "b.npy"),
            "--out", str(tmp_path / "y.npy"), "--report", str(tmp_path / "r.json"),
            "--seed", "7"]
    code, out, _ = cli_run(*argv)
    assert code == 0 and "bit-exact vs golden: PASS" in out
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["rtl_cycles"] == rep["model_cycles"] == (4 + 2) * 5 + 131
    assert rep["max_abs_err_vs_float"] < 1e-3
    from exion.golden.cfse import layernorm_fx
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), layernorm_fx(x, g, b))
    real = cfse_rtl.golden_of
    monkeypatch.setattr(cfse_rtl, "golden_of", lambda *a, **k: real(*a, **k) + (a[1] == "layernorm"))
    code, out, _ = cli_run(*(argv[:-4] + ["--out", str(tmp_path / "y2.npy")]))
    assert code == 1 and "FAIL: 80 of 80 outputs differ from golden layernorm_fx" in out
    assert not (tmp_path / "y2.npy").exists()


def test_cli_sim_cfse_long_row(cli_run, tmp_path):
    """``exion sim cfse`` takes a softmax row longer than toy's n_max = 256 (restream mode,
    reported), bit-exact, cycles equal to the model."""
    import json
    x = np.random.default_rng(5).integers(-9000, 9000, (2, 1000))
    np.save(tmp_path / "x.npy", x)
    code, out, _ = cli_run("sim", "cfse", "--config", "toy", "--fn", "softmax", "--x",
                           str(tmp_path / "x.npy"), "--out", str(tmp_path / "y.npy"),
                           "--report", str(tmp_path / "r.json"), "--seed", "3")
    assert code == 0 and "long-row mode (restream: rows of 1000 > n_max = 256" in out, out
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["mode"] == "restream"
    assert rep["rtl_cycles"] == rep["model_cycles"] == 2 * (3 * 250 + 8) + 21

"""``exion sim gemm`` end to end (toy): the gemm engine (CAU -> fetch -> SDUE), the golden-vector
SDUE path, bad input."""

import json

import numpy as np
import pytest

from exion import PRESETS
from exion.gen.cli import main
from exion.golden.conmerge import masked_gemm

pytestmark = pytest.mark.rtl


@pytest.fixture
def operands(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = PRESETS["toy"]
    rng = np.random.default_rng(11)
    M, K, N = 2 * cfg.rows + 3, 3 * cfg.lanes, cfg.omem_depth + 5   # two column groups
    a = rng.integers(cfg.wmin, cfg.wmax + 1, (M, K))
    b = rng.integers(cfg.wmin, cfg.wmax + 1, (K, N))
    mask = rng.random((M, N)) >= 0.85
    prev = rng.integers(-999, 999, (M, N))
    for name, arr in dict(a=a, b=b, m=mask, p=prev).items():
        np.save(tmp_path / f"{name}.npy", arr)
    return cfg, a, b, mask, prev


@pytest.mark.parametrize("vectors", ["rtl-cau", "golden"])
def test_sim_gemm_masked(operands, tmp_path, capsys, vectors):
    cfg, a, b, mask, prev = operands
    extra = ["--golden-vectors"] if vectors == "golden" else []
    rc = main(["sim", "gemm", "--config", "toy", "--a", "a.npy", "--b", "b.npy", "--mask",
               "m.npy", "--prev", "p.npy", "--out", "c.npy", "--report", "r.json", *extra])
    out = capsys.readouterr().out
    assert rc == 0, out
    np.testing.assert_array_equal(np.load(tmp_path / "c.npy"),
                                  masked_gemm(cfg, a, b, mask, out=prev))
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["bit_exact"] is True
    assert rep["conmerge_vectors"] == vectors
    if vectors == "golden":   # the SDUE alone: cycles exactly as the model
        assert rep["engine"] == "sdue" and rep["column_groups"] == 2
        assert rep["rtl_cycles"] == rep["model_cycles"]
    else:                     # the gemm engine: as many passes as golden, SDUE-paced
        assert rep["engine"] == "gemm" and rep["tiles"] >= 2
        assert rep["passes"] == rep["golden_passes"]
        assert rep["sdue_cycles_same_passes"] <= rep["rtl_cycles"]
    assert "speedup over dense" in out


def test_sim_gemm_merge_ways_runs_on_the_config_build(operands, tmp_path, capsys,
                                                     monkeypatch):
    """``--merge-ways`` is a run-time field: the engine built for the config runs it (no
    other config reaches the generator), bit-exact, with golden's pass count for that m."""
    import exion.sim.gemm_rtl as gemm_rtl
    cfg, a, b, mask, prev = operands
    built = []
    real = gemm_rtl.rtl_build
    monkeypatch.setattr(gemm_rtl, "rtl_build",
                        lambda c, top, **kw: built.append((c, top)) or real(c, top, **kw))
    rc = main(["sim", "gemm", "--config", "toy", "--merge-ways", "1", "--a", "a.npy", "--b",
               "b.npy", "--mask", "m.npy", "--prev", "p.npy", "--out", "c.npy",
               "--report", "r.json"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert built == [(cfg, "gemm")]
    np.testing.assert_array_equal(np.load(tmp_path / "c.npy"),
                                  masked_gemm(cfg, a, b, mask, out=prev))
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["merge_ways"] == 1 and rep["passes"] == rep["golden_passes"]


def test_sim_gemm_col_group_double_buffer(tmp_path, monkeypatch, capsys):
    """``--dataflow col-group`` runs a tile's column groups double-buffered, ``--single-buffer``
    one group per run: both bit-exact, RTL cycles equal to the model, the same passes as
    golden ConMerge, and the double-buffered run is the faster; ``--single-buffer`` is refused
    for row-block."""
    monkeypatch.chdir(tmp_path)
    cfg = PRESETS["toy"]
    rng = np.random.default_rng(12)
    M, K, N = 2 * cfg.rows, 32 * cfg.lanes, 20      # K/L = 32: 8 columns a WMEM half
    a = rng.integers(cfg.wmin, cfg.wmax + 1, (M, K))
    b = rng.integers(cfg.wmin, cfg.wmax + 1, (K, N))
    mask = rng.random((M, N)) >= 0.5
    for name, arr in dict(a=a, b=b, m=mask).items():
        np.save(tmp_path / f"{name}.npy", arr)
    cyc = {}
    for extra in ([], ["--single-buffer"]):
        rc = main(["sim", "gemm", "--config", "toy", "--a", "a.npy", "--b", "b.npy", "--mask",
                   "m.npy", "--dataflow", "col-group", "--gb-bytes-per-cycle", "3", "--out",
                   "c.npy", "--report", "r.json", *extra])
        assert rc == 0, capsys.readouterr().out
        np.testing.assert_array_equal(np.load("c.npy"), masked_gemm(cfg, a, b, mask))
        rep = json.loads((tmp_path / "r.json").read_text())
        assert rep["bit_exact"] and rep["passes"] == rep["golden_passes"]
        assert rep["rtl_cycles"] == rep["model_cycles"]
        assert rep["double_buffer"] is not bool(extra)
        cyc[bool(extra)] = rep["rtl_cycles"]
    assert cyc[False] < cyc[True]
    rc = main(["sim", "gemm", "--config", "toy", "--a", "a.npy", "--b", "b.npy", "--mask",
               "m.npy", "--single-buffer", "--out", "d.npy"])
    err = capsys.readouterr().err
    assert rc == 2 and "--single-buffer" in err and not (tmp_path / "d.npy").exists()


@pytest.mark.rtl
def test_sim_gemm_compact(tmp_path, capsys, monkeypatch):
    """``--compact`` on a column-concentrated mask: bit-exact, the model's cycles, fewer
    cycles than without it, the kept columns reported; refused without the engine."""
    monkeypatch.chdir(tmp_path)
    cfg = PRESETS["toy"]
    rng = np.random.default_rng(7)
    a = rng.integers(cfg.wmin, cfg.wmax + 1, (3 * cfg.rows + 1, 16 * cfg.lanes))
    b = rng.integers(cfg.wmin, cfg.wmax + 1, (16 * cfg.lanes, 25))
    mask = np.zeros((a.shape[0], 25), bool)
    mask[:, rng.choice(25, 5, replace=False)] = True
    for name, arr in (("a", a), ("b", b), ("m", mask)):
        np.save(f"{name}.npy", arr)
    cyc = {}
    for extra in ([], ["--compact"]):
        rc = main(["sim", "gemm", "--config", "toy", "--a", "a.npy", "--b", "b.npy", "--mask",
                   "m.npy", "--dataflow", "col-group", "--wmem-map", "auto", "--out", "c.npy",
                   "--report", "r.json", *extra])
        assert rc == 0, capsys.readouterr().out
        np.testing.assert_array_equal(np.load("c.npy"), masked_gemm(cfg, a, b, mask))
        rep = json.loads((tmp_path / "r.json").read_text())
        assert rep["bit_exact"] and rep["rtl_cycles"] == rep["model_cycles"]
        cyc[bool(extra)] = rep["rtl_cycles"]
        assert rep["compact"] == ({"cols": 5, "k": a.shape[1]} if extra else None)
    assert cyc[True] < cyc[False]
    rc = main(["sim", "gemm", "--config", "toy", "--a", "a.npy", "--b", "b.npy",
               "--compact", "--out", "d.npy"])
    err = capsys.readouterr().err
    assert rc == 2 and "--compact" in err and not (tmp_path / "d.npy").exists()


def test_sim_gemm_engine_refuses_input_sparse(operands, tmp_path, capsys):
    rc = main(["sim", "gemm", "--config", "toy", "--a", "a.npy", "--b", "b.npy", "--mask",
               "m.npy", "--input-sparse", "--out", "c.npy"])
    err = capsys.readouterr().err
    assert rc == 2 and "--input-sparse" in err and "--golden-vectors" in err
    assert not (tmp_path / "c.npy").exists()


@pytest.mark.parametrize("args,message", [
    (["--a", "a.npy", "--b", "a.npy"], "--a a.npy is (19, 12) and --b a.npy is (19, 12)"),
    (["--a", "a.npy", "--b", "b.npy", "--mask", "a.npy"], "--mask a.npy has shape (19, 12)"),
    (["--a", "nope.npy", "--b", "b.npy"], "--a: file 'nope.npy' does not exist"),
    (["--a", "a.npy", "--b", "b.npy", "--merge-ways", "3"],
     "--merge-ways: merge_ways = 3 is invalid for config 'toy': must be an integer in 1..2"),
])
def test_sim_gemm_bad_input(operands, tmp_path, capsys, args, message):
    rc = main(["sim", "gemm", "--config", "toy", *args, "--out", "c.npy"])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "c.npy").exists()


def _predict_operands(folder, cfg, seed: int, n: int, d: int, dh: int):
    """Seeded random X (n x d), Wq, Wk (d x dh) in the config's range, saved as
    ``x.npy``, ``wq.npy``, ``wk.npy`` in ``folder``."""
    rng = np.random.default_rng(seed)
    arrs = [rng.integers(cfg.wmin, cfg.wmax + 1, shape) for shape in ((n, d), (d, dh), (d, dh))]
    for name, arr in zip(("x", "wq", "wk"), arrs):
        np.save(folder / f"{name}.npy", arr)
    return arrs


def test_sim_predict(tmp_path, monkeypatch, capsys):
    from exion.golden.predict import eager_predict
    monkeypatch.chdir(tmp_path)
    cfg = PRESETS["toy"]
    x, wq, wk = _predict_operands(tmp_path, cfg, 5, 13, 20, 6)
    rc = main(["sim", "predict", "--config", "toy", "--x", "x.npy", "--wq", "wq.npy",
               "--wk", "wk.npy", "--k", "0.3", "--out", "mask.npy", "--report", "r.json"])
    assert rc == 0, capsys.readouterr().out
    want = eager_predict(cfg, x, wq, wk, "0.3")
    np.testing.assert_array_equal(np.load(tmp_path / "mask.npy"), want.score_mask)
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["bit_exact"] and rep["rtl_cycles"] == rep["model_cycles"]
    assert rep["skipped_v"] == want.skipped_v
    # bad input: one line, nothing written
    rc = main(["sim", "predict", "--config", "toy", "--x", "x.npy", "--wq", "x.npy",
               "--wk", "wk.npy", "--k", "0.3", "--out", "m2.npy"])
    assert rc == 2 and "--wq" in capsys.readouterr().err
    assert not (tmp_path / "m2.npy").exists()
    # exact keys (the EPRE's k_given run) on the same build
    kx = np.random.default_rng(5).integers(cfg.wmin, cfg.wmax + 1, (9, 6))
    np.save(tmp_path / "kx.npy", kx)
    rc = main(["sim", "predict", "--config", "toy", "--x", "x.npy", "--wq", "wq.npy",
               "--k-exact", "kx.npy", "--k", "0.3", "--out", "mk.npy", "--report", "rk.json"])
    assert rc == 0, capsys.readouterr().out
    want = eager_predict(cfg, x, wq, None, "0.3", k_exact=kx)
    np.testing.assert_array_equal(np.load(tmp_path / "mk.npy"), want.score_mask)
    rep = json.loads((tmp_path / "rk.json").read_text())
    assert rep["bit_exact"] and rep["rtl_cycles"] == rep["model_cycles"] and rep["n_k"] == 9


@pytest.mark.long      # the radix RTL runs in tests/test_epre_rtl.py::test_epre_rtl_radix_toy
def test_sim_predict_radix_kind(tmp_path, monkeypatch, capsys):
    """Issue 18: ``exion sim predict`` on a toy EPRE with the radix selector kind (the same
    build as ``tests/test_epre_rtl.py::test_epre_rtl_radix_toy``): bit-exact, cycles == the
    radix model, which differs from the insertion kind's."""
    from exion.golden.cycles import epre_run_cycles
    from exion.golden.predict import eager_predict
    monkeypatch.chdir(tmp_path)
    (tmp_path / "toy_radix.toml").write_text(
        'base = "toy"\nepre_selector_kind = "radix"\nepre_selectors = 3\n'
        'epre_radix_ports = 4\n')
    cfg = PRESETS["toy"]
    x, wq, wk = _predict_operands(tmp_path, cfg, 6, 14, 19, 5)
    rc = main(["sim", "predict", "--config", "toy_radix.toml", "--x", "x.npy", "--wq",
               "wq.npy", "--wk", "wk.npy", "--k", "0.3", "--qth", "3000", "--out", "mask.npy",
               "--report", "r.json"])
    assert rc == 0, capsys.readouterr().out
    want = eager_predict(cfg, x, wq, wk, "0.3", q_th_int=3000)
    np.testing.assert_array_equal(np.load(tmp_path / "mask.npy"), want.score_mask)
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["bit_exact"] and rep["rtl_cycles"] == rep["model_cycles"]
    radix = cfg.replace(epre_selector_kind="radix", epre_selectors=3, epre_radix_ports=4)
    assert rep["rtl_cycles"] == epre_run_cycles(radix, 14, 14, 19, 5)
    assert rep["rtl_cycles"] != epre_run_cycles(radix, 14, 14, 19, 5, kind="insertion")

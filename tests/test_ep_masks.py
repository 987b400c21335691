"""Issue 19: the synthetic EP masks' key correlation (``golden.block.synth_ep(key_corr=)``),
fitted to the digits64 DiT's real masks (``bench/perf_ep_masks.py``), and its use by the system
model (``exion evaluate --ep-key-corr``)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from exion import PRESETS
from exion.errors import ExionError
from exion.gen import cli
from exion.golden import block as bl
from exion.golden import system as sy
from exion.golden import workloads_sys as ws

CFG = PRESETS["exion16"]
_spec = importlib.util.spec_from_file_location(
    "ep_masks_bench", Path(__file__).resolve().parents[1] / "bench" / "perf_ep_masks.py")
epm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(epm)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, True, "0.5", None])
def test_key_corr_is_validated(bad):
    with pytest.raises(ExionError, match="EP key correlation"):
        bl.synth_ep(np.random.default_rng(0), 2, 16, 0.5, key_corr=bad)


def test_key_corr_zero_is_the_iid_model():
    # rho = 0: the logits are the first standard-normal draw of the rng, as before
    a = bl.synth_ep(np.random.default_rng(5), 3, 24, 0.25, q_th=0.5, key_corr=0.0)
    logits = np.random.default_rng(5).standard_normal((3, 24, 24))
    order = np.argsort(-logits, axis=2, kind="stable")
    kn = math.ceil(0.25 * 24)
    mask = np.zeros((3, 24, 24), bool)
    np.put_along_axis(mask, order[:, :, :kn], True, axis=2)
    srt = np.take_along_axis(logits, order[:, :, :2], axis=2)
    dom = (srt[:, :, 0] - srt[:, :, 1]) >= 0.5
    top1 = np.zeros_like(mask)
    np.put_along_axis(top1, order[:, :, :1], True, axis=2)
    assert np.array_equal(a["score_mask"], np.where(dom[:, :, None], top1, mask))
    assert np.array_equal(a["skip_q"], dom)


@pytest.mark.parametrize("k", [0.05, 0.2, 0.5])
def test_key_corr_keeps_k_and_concentrates_keys(k):
    T = 64
    kn = math.ceil(k * T)
    iid = bl.synth_ep(np.random.default_rng(1), 8, T, k)["score_mask"]
    cor = bl.synth_ep(np.random.default_rng(1), 8, T, k, key_corr=0.65)["score_mask"]
    # top-k per query row is exact either way
    assert (iid.sum(axis=2) == kn).all() and (cor.sum(axis=2) == kn).all()
    # queries of a 16-row block agree on keys: fewer keys needed per row block
    assert epm.union_density(cor) < epm.union_density(iid) - 0.05


def test_fitted_rho_matches_real_digits64_masks():
    """The default rho reproduces the real masks' 16-query key union; i.i.d. masks do not
    (so a wrong EP_KEY_CORR fails here)."""
    for k in (0.05, 0.2):
        real = epm.real_masks(k, steps=6, samples=2, seed=0)
        u_real = epm.union_density(real)
        u_fit = epm.union_density(epm.synth_masks(k, bl.EP_KEY_CORR, real.shape[1], 32, 0))
        u_iid = epm.union_density(epm.synth_masks(k, 0.0, real.shape[1], 32, 0))
        assert abs(u_fit - u_real) < 0.06, (k, u_fit, u_real)
        assert u_iid - u_real > 0.25, (k, u_iid, u_real)


def test_system_uses_the_fitted_masks():
    blk = ws.Block("s", T=128, d=128, heads=2, ffn=256)
    d = sy.block_gemms(CFG, blk, "ep", k=0.2, seed=1)
    i = sy.block_gemms(CFG, blk, "ep", k=0.2, seed=1, ep_key_corr=0.0)
    dc = sy.block_gemms(CFG, blk, "ep", k=0.2, seed=1, ep_key_corr=bl.EP_KEY_CORR)
    cyc = lambda r: sum(x.cycles * n for x, n, kind in r["gemms"] if kind == "head")  # noqa: E731
    assert cyc(d) == cyc(dc)
    # correlated masks pack into fewer attention passes than i.i.d. ones at k = 0.2
    assert cyc(d) < cyc(i)


def test_cli_ep_key_corr(tmp_path, capsys):
    out = tmp_path / "e.json"
    assert cli.main(["evaluate", "--system", "exion4", "--model", "mld", "--ep-key-corr", "0",
                     "--json", str(out)]) == 0
    assert json.loads(out.read_text())["ep_key_corr"] == 0.0
    capsys.readouterr()
    bad = tmp_path / "bad.json"
    assert cli.main(["evaluate", "--model", "mld", "--ep-key-corr", "1",
                     "--json", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "--ep-key-corr" in err and len(err.strip().splitlines()) == 1
    assert not bad.exists()

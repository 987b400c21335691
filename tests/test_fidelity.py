"""Issue 20: the 64-token digits DiT, the column-level FFN-Reuse rule, the modelled speedup
and the Pareto front. Fast tests only (few samples and steps); the tables are benchmarks
(bench/perf_fidelity.py)."""

import json
import math

import numpy as np
import pytest

from exion.config import get_config
from exion.errors import ExionError
from exion.golden import ffn_reuse as fr
from exion.golden.cfse import gelu_float
from exion.workloads import accuracy as acc
from exion.workloads import fidelity as fi
from exion.workloads.common import ARCH, MODELS
from exion.workloads.dit import Exion, sample
from exion.workloads.weights import WEIGHTS, file_sha256, load_weights

# Measured with the shipped digits64 weights (MODEL_CARD_digits64.md); margin for BLAS order.
QUALITY_SAMPLES, QUALITY_STEPS, QUALITY_MIN_ACC = 20, 20, 0.80


@pytest.fixture(scope="module")
def m64():
    # shipped: a missing or changed file fails here (load_model names it), never skips
    return fi.load_model("digits64")


# -- the column rule (golden) ------------------------------------------------------------
def column_violations(mask, h, n_ones):
    """Why ``mask`` is not the column rule's mask for ``h`` with ``n_ones`` ones ([] = ok)."""
    T, F = mask.shape
    out = []
    if int(mask.sum()) != n_ones:
        out.append(f"{int(mask.sum())} ones, expected {n_ones}")
    cnt = mask.sum(axis=0)
    partial = np.flatnonzero((cnt > 0) & (cnt < T))
    if partial.size > 1:
        out.append(f"{partial.size} partial columns")
    score = np.abs(h).sum(axis=0)
    full = np.flatnonzero(cnt == T)
    rest = np.setdiff1d(np.arange(F), full)
    if full.size and rest.size and score[full].min() < score[rest].max():
        out.append("a recomputed column scores below a reused one")
    if full.size and rest.size:     # ties: the lower index wins
        for j in full:
            if np.any((score[rest] == score[j]) & (rest < j)):
                out.append("tie not broken towards the lower column index")
                break
    return out


@pytest.mark.parametrize("seed,s", [(0, 0.8), (1, 0.95), (2, 0.97), (3, 0.5)])
def test_column_rule_matches_magnitude_count_and_is_column_shaped(seed, s):
    rng = np.random.default_rng(seed)
    h = rng.integers(-2047, 2048, (16, 256)) * (rng.random(256) < 0.5)   # ties at 0
    mag, theta = fr.build_mask(h, s, "magnitude")
    col, theta_c = fr.build_mask(h, s, "column")
    assert theta_c == theta
    assert column_violations(col, h, int(mag.sum())) == []


def test_column_rule_property_check_catches_broken_masks():
    rng = np.random.default_rng(5)
    h = rng.integers(-2047, 2048, (16, 64))
    n = int(fr.build_mask(h, 0.8, "magnitude")[0].sum())
    good = fr.column_mask(h, n)
    assert column_violations(good, h, n) == []
    # mutations: element mask (the magnitude rule), wrong columns, wrong count
    assert column_violations(fr.build_mask(h, 0.8, "magnitude")[0], h, n)
    order = np.argsort(np.abs(h).sum(axis=0))       # ascending: the worst columns
    bad = np.zeros_like(good)
    bad[:, order[:n // 16]] = True
    bad[np.arange(n % 16), order[n // 16]] = True
    assert column_violations(bad, h, n)
    assert column_violations(fr.column_mask(h, n - 1), h, n)


def test_column_rule_ties_and_partial_column():
    h = np.zeros((4, 6), dtype=np.int64)
    h[:, 3] = 5
    h[2, 5] = 9                    # column 5 score 9 > column 3 score 20? no: 20 > 9
    m = fr.column_mask(h, 6)       # 1 full column (3), 2 elements of column 5
    assert m[:, 3].all() and m[:, 5].sum() == 2 and m[2, 5]
    assert m.sum() == 6 and not m[:, [0, 1, 2, 4]].any()
    m0 = fr.column_mask(np.zeros((2, 3), np.int64), 2)     # all ties -> column 0
    assert m0[:, 0].all() and m0.sum() == 2
    with pytest.raises(ExionError, match="do not fit"):
        fr.column_mask(h, 25)


def test_golden_ffn_reuse_run_with_column_rule():
    cfg = get_config("toy")
    from exion.golden.cfse import gelu_params
    rng = np.random.default_rng(0)
    T, d, F, D = 4, 8, 16, 8
    w1 = rng.integers(-100, 100, (d, F))
    w2 = rng.integers(-100, 100, (F, D))
    b1, b2 = np.zeros(F, np.int64), np.zeros(D, np.int64)
    xs = [rng.integers(-100, 100, (T, d)) for _ in range(3)]
    g = gelu_params(1 / 64, 1 / 64)
    run = fr.ffn_reuse_run(cfg, xs, w1, b1, w2, b2, g, n=2, s=0.75, rule="column")
    m = run.iterations[1].mask
    cnt = m.sum(axis=0)
    assert int(m.sum()) == int(fr.build_mask(run.iterations[0].h, 0.75)[0].sum())
    assert ((cnt == 0) | (cnt == T)).sum() >= F - 1
    # the existing rules keep their behaviour (same masks as build_mask)
    for rule in ("magnitude", "per_token"):
        r = fr.ffn_reuse_run(cfg, xs, w1, b1, w2, b2, g, n=2, s=0.75, rule=rule)
        np.testing.assert_array_equal(r.iterations[1].mask,
                                      fr.build_mask(r.iterations[0].h, 0.75, rule)[0])


# -- the 64-token model ------------------------------------------------------------------
def test_digits64_weights_checksum_card_and_shape(m64):
    path, sha = WEIGHTS["digits64"]
    assert file_sha256(path) == sha
    assert sha in (path.parent / "MODEL_CARD_digits64.md").read_text()
    w, meta = load_weights(model="digits64")
    assert meta["model"] == "digits64" and meta["tokens"] == 64
    assert m64.tokens == 64 and m64.patch == 1 and m64.name == "digits64"
    assert sum(v.size for v in w.values()) == meta["params"]


def _reference_eps64(w, img, t, y):
    """Independent per-token forward pass of the 1x1-patch model (loops over heads/queries)."""
    d, H = ARCH["width"], ARCH["heads"]
    dh = d // H
    x = img.reshape(64, 1) @ w["patch.w"] + w["patch.b"] + w["pos"]
    half = ARCH["t_freq"] // 2
    te = [math.cos(t * math.exp(-math.log(10000) * j / half)) for j in range(half)] + \
        [math.sin(t * math.exp(-math.log(10000) * j / half)) for j in range(half)]

    def silu(v):
        return v / (1 + np.exp(-v))

    def ln(r):
        return (r - r.mean()) / math.sqrt(r.var() + ARCH["ln_eps"])

    c = silu(np.array(te) @ w["t1.w"] + w["t1.b"]) @ w["t2.w"] + w["t2.b"] + w["y_emb"][y]
    for i in range(ARCH["depth"]):
        m = silu(c) @ w[f"blocks.{i}.ada.w"] + w[f"blocks.{i}.ada.b"]
        sh1, sc1, g1, sh2, sc2, g2 = (m[j * d:(j + 1) * d] for j in range(6))
        h = np.array([ln(r) * (1 + sc1) + sh1 for r in x])
        qkv = h @ w[f"blocks.{i}.qkv.w"] + w[f"blocks.{i}.qkv.b"]
        att = np.zeros((64, d))
        for hd in range(H):
            q, k, v = (qkv[:, j * d + hd * dh:j * d + (hd + 1) * dh] for j in range(3))
            for a in range(64):
                sc = k @ q[a] / math.sqrt(dh)
                e = np.exp(sc - sc.max())
                att[a, hd * dh:(hd + 1) * dh] = e @ v / e.sum()
        x = x + g1 * (att @ w[f"blocks.{i}.proj.w"] + w[f"blocks.{i}.proj.b"])
        h = np.array([ln(r) * (1 + sc2) + sh2 for r in x])
        f = gelu_float(h @ w[f"blocks.{i}.fc1.w"] + w[f"blocks.{i}.fc1.b"])
        x = x + g2 * (f @ w[f"blocks.{i}.fc2.w"] + w[f"blocks.{i}.fc2.b"])
    m = silu(c) @ w["fada.w"] + w["fada.b"]
    x = np.array([ln(r) * (1 + m[d:]) + m[:d] for r in x]) @ w["out.w"] + w["out.b"]
    return x.reshape(8, 8)


def test_digits64_forward_matches_reference(m64):
    img = np.random.default_rng(1).standard_normal((8, 8))
    got = m64.eps(img[None], np.array([420]), np.array([4]))[0]
    np.testing.assert_allclose(got, _reference_eps64(m64.w, img, 420, 4), rtol=0, atol=1e-9)


def test_digits64_samples_are_recognisable(m64):
    """The issue's bar: sample quality at least digits16's by the classifier (same samples,
    steps, seed and labels), and well above chance."""
    got = {}
    for name, m in (("digits64", m64), ("digits16", fi.load_model("digits16"))):
        r = sample(m, QUALITY_SAMPLES, QUALITY_STEPS, Exion(), seed=0)
        got[name] = acc.class_accuracy(r.images, r.labels)
    assert got["digits64"] >= max(got["digits16"], QUALITY_MIN_ACC), got


def test_digits64_exion_switches_run_and_record(m64):
    rec = fi.Recorder(1)
    ex = Exion(ffn_reuse=True, n=2, s=0.8, rule="column", ep=True, k=0.2, q_th=0.15,
               quant=True)
    r = sample(m64, 2, 4, ex, seed=0, record=rec)
    assert 0.7 < r.ffn_sparsity < 0.9 and r.ep_sparsity >= 0.8 - 1e-9
    kinds = {(k, m.shape) for _, _, k, m, _ in rec}
    assert kinds == {("ffn", (1, 64, 256)), ("ep", (1, 4, 64, 64))}
    for _, _, k, m, _ in rec:
        if k == "ffn":
            cnt = m[0].sum(axis=0)
            assert ((cnt == 0) | (cnt == 64)).sum() >= 255      # column-shaped


def test_models_registry_and_bad_model():
    assert set(MODELS) == set(WEIGHTS) == {"digits16", "digits64"}
    assert MODELS["digits64"]["tokens"] == 64 and MODELS["digits16"] == ARCH
    with pytest.raises(ExionError, match="model must be one of"):
        fi.load_model("digits32")
    from exion.gen.cli import workload as wl
    assert wl.RULES == fr.RULES and tuple(wl.MODELS) == tuple(WEIGHTS)


# -- modelled speedup and Pareto -----------------------------------------------------------
def test_modelled_speedup_is_one_without_switches_and_column_beats_element():
    m = fi.load_model("digits16")
    rec = fi.Recorder(1)
    ex = Exion()
    sample(m, 1, 3, ex, 0, record=rec)
    assert fi.modelled_speedup(m, ex, 3, rec, cycle_windows=None)["speedup"] == 1.0
    out = {}
    for rule in ("magnitude", "column"):
        ex = Exion(ffn_reuse=True, n=2, s=0.8, rule=rule)
        rec = fi.Recorder(1)
        sample(m, 1, 3, ex, 0, record=rec)
        out[rule] = fi.modelled_speedup(m, ex, 3, rec, cycle_windows=None)
    # whole hidden units skip W1 columns / W2 rows: the column-aware dataflow must see it
    assert out["column"]["ffn_speedup"] > out["magnitude"]["ffn_speedup"] > 0


def test_pareto_front_and_its_mutation():
    pts = [{"row": "a", "speedup": 1.0, "psnr": 50.0}, {"row": "b", "speedup": 1.2,
                                                          "psnr": 45.0},
           {"row": "c", "speedup": 1.1, "psnr": 40.0}, {"row": "d", "speedup": 1.2,
                                                          "psnr": 45.0}]
    front = [p["row"] for p in fi.pareto_front(pts)]
    assert front == ["a", "b", "d"]             # c is dominated by b; b and d tie

    def broken(points):                          # mutation: "higher speedup only"
        return [max(points, key=lambda p: p["speedup"])]
    assert [p["row"] for p in broken(pts)] != front


def test_accuracy_cli_pareto_writes_png_and_json(tmp_path):
    from exion.gen.cli import main
    rc = main(["accuracy", "--model", "digits16", "--pareto", "--samples", "4", "--steps",
               "3", "--k-list", "0.05", "--q-grid", "1", "--column-s", "0.8", "--n-list",
               "2", "--cycle-windows", "1", "--out", str(tmp_path)])
    assert rc == 0
    par = json.loads((tmp_path / "pareto_digits16.json").read_text())
    pts = par["models"]["digits16"]["points"]
    assert any(p["paper_setting"] for p in pts) and any(p["on_front"] for p in pts)
    assert {p["exion"]["rule"] for p in pts} == {"magnitude", "column"}
    assert (tmp_path / "pareto_digits16.png").stat().st_size > 1000
    ep = json.loads((tmp_path / "ep_digits16.json").read_text())
    assert {(r["lod_terms"], r["q_th"]) for r in ep["rows"]} >= {(1, None), (1, 0.15),
                                                                  (2, None), (2, 0.15)}
    assert [r["k"] for r in ep["controls"]] == [0.05]
    assert ep["controls"][0]["exion"]["ep_scores"] == "exact"
    assert "goal" in ep and "Goal (EP loss" in (tmp_path / "ep_digits16.md").read_text()


def test_accuracy_cli_bad_input_is_one_line(tmp_path, capsys):
    from exion.gen.cli import main
    with pytest.raises(SystemExit):
        main(["accuracy", "--model", "digits32", "--out", str(tmp_path)])
    assert "digits32" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_short_training_is_bit_reproducible(tmp_path):
    """Two runs of the training recipe (2 steps, batch 8) give byte-identical files; the
    digits16 recipe's file format is unchanged (no model/tokens in its meta)."""
    pytest.importorskip("torch")
    from exion.workloads import train
    shas = []
    for run in ("a", "b"):
        train.main(["--model", "digits64", "--steps", "2", "--batch", "8",
                    "--out", str(tmp_path / f"{run}.npz")])
        shas.append(file_sha256(tmp_path / f"{run}.npz"))
    assert shas[0] == shas[1]
    assert load_weights(tmp_path / "a.npz")[1]["tokens"] == 64
    train.main(["--steps", "1", "--batch", "4", "--out", str(tmp_path / "d16.npz")])
    w, meta = load_weights(tmp_path / "d16.npz")
    assert "model" not in meta and w["pos"].shape == (16, 64)


def test_trace_digits64_column_rule(m64, tmp_path):
    from exion.gen.cli import main
    from exion.workloads import trace as tr
    f = tmp_path / "t64.npz"
    assert main(["trace", "--model", "digits64", "--rule", "column", "--steps", "3",
                 "--samples", "2", "--iterations", "1", "--file", str(f)]) == 0
    z, meta = tr.load(f)
    assert meta["tokens"] == 64 and meta["model"] == "digits64"
    m = z["blk0/it1/fc1_mask"]
    assert m.shape == (128, 256) and z["blk0/it1/fc1_x"].shape == (128, 64)
    assert z["blk0/it1/ep_mask"].shape == (2, 4, 64, 64)
    one = tr.extract(z, meta, "blk0/it1/fc1_mask", sample_idx=1)
    np.testing.assert_array_equal(one, m[64:])
    cnt = one.sum(axis=0)
    assert ((cnt == 0) | (cnt == 64)).sum() >= 255


# -- the exact top-k control and the EP goal ------------------------------------------------
def topk_violations(keep, logits, kn):
    """Why ``keep`` is not each row's ``kn`` largest logits (ties to the lower index)."""
    out = []
    if not np.all(keep.sum(-1) == kn):
        out.append("not kn keys per row")
    lo = np.where(keep, logits, np.inf).min(-1, keepdims=True)
    hi = np.where(keep, -np.inf, logits).max(-1, keepdims=True)
    if np.any(hi > lo):
        out.append("a dropped key scores above a kept one")
    return out


@pytest.mark.parametrize("seed,k", [(0, 0.05), (1, 0.5), (2, 0.8), (3, 1.0)])
def test_exact_topk_keeps_the_largest_logits(seed, k):
    from exion.golden.predict import keep_count
    from exion.workloads.dit import _exact_topk
    rng = np.random.default_rng(seed)
    logits = np.round(rng.standard_normal((2, 3, 16, 16)), 1)       # ties at 0.1 steps
    kn = keep_count(k, 16)
    assert topk_violations(_exact_topk(logits, kn), logits, kn) == []
    assert topk_violations(_exact_topk(-logits, kn), logits, kn) != [] or kn == 16  # mutation


def test_exact_control_with_all_keys_equals_ep_off_and_drops_keys_otherwise():
    m = fi.load_model("digits16")
    base = Exion(ffn_reuse=True, n=2, s=0.8)
    off = sample(m, 2, 3, base, 5)
    full = sample(m, 2, 3, Exion(ffn_reuse=True, n=2, s=0.8, ep=True, k=1.0,
                                 ep_scores="exact"), 5)
    assert np.array_equal(off.images, full.images) and full.ep_sparsity == 0.0
    cut = sample(m, 2, 3, Exion(ffn_reuse=True, n=2, s=0.8, ep=True, k=0.5,
                                ep_scores="exact"), 5)
    assert cut.ep_sparsity == pytest.approx(0.5) and not np.array_equal(off.images, cut.images)
    # the k largest of T probabilities hold at least k of the mass; all keys hold all of it
    assert full.ep_kept_mass == pytest.approx(1.0) and off.ep_kept_mass is None
    assert 0.5 <= cut.ep_kept_mass < 1.0


def test_exact_control_bad_input():
    with pytest.raises(ExionError, match="ep_scores"):
        Exion(ep_scores="oracle")
    with pytest.raises(ExionError, match="float"):
        Exion(ep=True, ep_scores="exact", quant=True)


def test_ep_goal_picks_the_sparsest_row_within_the_loss():
    rows = [{"row": "a", "k": 0.8, "q_th": None, "lod_terms": 2, "intra_sparsity": 0.19,
             "loss_vs_ffn_reuse": 1.2},
            {"row": "b", "k": 0.5, "q_th": None, "lod_terms": 2, "intra_sparsity": 0.5,
             "loss_vs_ffn_reuse": 1.5},
            {"row": "c", "k": 0.9, "q_th": None, "lod_terms": 1, "intra_sparsity": 0.06,
             "loss_vs_ffn_reuse": 0.3},
            {"row": "d", "k": 1.0, "q_th": None, "lod_terms": 1, "intra_sparsity": 0.0,
             "loss_vs_ffn_reuse": 0.0}]
    assert fi.ep_goal(rows)["row"] == "a"
    assert fi.ep_goal(rows, max_loss=1.6)["row"] == "b"
    assert fi.ep_goal(rows, max_loss=0.1) is None           # d has no sparsity: not EP at work


def test_frechet_by_hand_and_singular_covariances():
    """FD-PCA's Frechet distance: diagonal covariances by hand (|m1 - m2|^2 + sum of
    (sqrt(a) - sqrt(b))^2); a covariance of fewer samples than dimensions (singular, what
    ``exion accuracy --samples 4`` gives) has a finite distance and no warning (the suite
    turns warnings into errors: scipy's sqrtm of the product warned there)."""
    from exion.workloads.accuracy import _frechet
    m1, m2 = np.array([1.0, 0.0, 2.0]), np.array([0.0, 0.0, 0.0])
    a, b = np.array([4.0, 1.0, 9.0]), np.array([1.0, 1.0, 0.0])
    assert _frechet(m1, np.diag(a), m2, np.diag(b)) == pytest.approx(5 + 1 + 0 + 9)
    x = np.random.default_rng(5).normal(size=(4, 12))
    c = np.cov(x, rowvar=False)                       # rank 3 of 12
    d = _frechet(x.mean(0), c, np.zeros(12), np.eye(12))
    assert np.isfinite(d) and d > 0
    assert _frechet(x.mean(0), c, x.mean(0), c) == pytest.approx(0, abs=1e-6)

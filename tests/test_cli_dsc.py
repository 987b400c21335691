"""``exion sim block``: options, one-line errors, the trace replay check, and (long) a run."""

import json

import numpy as np
import pytest

from exion.workloads.dit import DiT
from exion.workloads.trace import collect, save
from exion.workloads.weights import load_weights


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    model = DiT(load_weights()[0])
    arrays, meta = collect(model, steps=4, samples=1, seed=2)
    path = tmp_path_factory.mktemp("tr") / "t.npz"
    save(path, arrays, meta)
    return path, arrays, meta


def test_help(cli_run):
    with pytest.raises(SystemExit):
        cli_run("sim", "block", "--help")


@pytest.mark.parametrize("argv,word", [
    (["--block", "9", "--iter", "0"], "--block 9"),
    (["--block", "0", "--iter", "4"], "--iter 4"),
    (["--block", "0", "--iter", "0", "--sample", "1"], "--sample 1"),
    (["--block", "0", "--iter", "0", "--stall", "1.5"], "--stall"),
])
def test_bad_input_one_line(cli_run, trace, tmp_path, argv, word):
    code, out, err = cli_run("sim", "block", "--trace", str(trace[0]), *argv,
                             "--json", str(tmp_path / "r.json"))
    assert code != 0 and word in err and "Traceback" not in err
    assert not (tmp_path / "r.json").exists()


def test_replay_must_match_trace(cli_run, trace, tmp_path):
    """A trace whose meta does not describe its arrays (another seed) is refused."""
    path, arrays, meta = trace
    bad = tmp_path / "bad.npz"
    save(bad, arrays, {**meta, "seed": meta["seed"] + 1})
    code, out, err = cli_run("sim", "block", "--trace", str(bad), "--block", "1", "--iter",
                             "1")
    assert code != 0 and "differs from the replay" in err


def _ep_schedules(cli_run, trace, tmp_path, scheds) -> dict:
    r = {}
    for sched in scheds:
        out_json = tmp_path / f"r_{sched}.json"
        code, out, err = cli_run("sim", "block", "--trace", str(trace[0]), "--block", "1",
                                 "--iter", "0", "--seed", "1", "--json", str(out_json),
                                 "--ep-schedule", sched)
        assert code == 0 and "PASS" in out, out + err
        r[sched] = json.loads(out_json.read_text())
        assert r[sched]["cycles"] == r[sched]["model_cycles"]
    return r


def test_sim_block_ep_schedules(cli_run, trace, tmp_path):
    """Toy, block 1 of the dense iteration: the overlapped EP schedule (stages ``kv`` and
    ``q``) and the sequential one (stage ``qkv``) both pass with cycles == model; the
    overlap hides EPRE cycles and is faster here."""
    r = _ep_schedules(cli_run, trace, tmp_path, ("overlap", "sequential"))
    ov, seq = r["overlap"], r["sequential"]
    assert {"epre", "kv", "q"} <= set(ov["gemm_cycles"]) and "qkv" not in ov["gemm_cycles"]
    assert "qkv" in seq["gemm_cycles"] and seq["ep_schedule"] == "sequential"
    assert ov["epre_hidden_cycles"] > 0 and seq["epre_hidden_cycles"] == 0
    assert ov["cycles"] < seq["cycles"]


def _exact_keys_run(cli_run, trace, tmp_path, *extra):
    out_json = tmp_path / "r.json"
    code, out, err = cli_run("sim", "block", "--trace", str(trace[0]), "--block", "1",
                             "--iter", "0", "--seed", "1", "--ep-keys", "exact",
                             *extra, "--json", str(out_json))
    assert code == 0 and "PASS" in out and "keys exact" in out, out + err
    r = json.loads(out_json.read_text())
    assert r["ep_keys"] == "exact" and r["key_tees"] == 4
    assert r["cycles"] == r["model_cycles"] and r["ep_schedule"] == "overlap"
    return r, out


def test_sim_block_exact_keys(cli_run, trace, tmp_path):
    """``--ep-keys exact``: the block replayed with EP on the exact keys (not the trace's),
    each head's K/V tile store teeing them into the EPRE (4 heads), PASS with cycles ==
    model, the runs queued, Q projected early (toy: the cycle model's choice); with
    ``--ep-schedule sequential`` refused in one line."""
    r, out = _exact_keys_run(cli_run, trace, tmp_path)
    assert r["key_queue"] and r["q_early"] and "Q projected densely" in out
    code, out, err = cli_run("sim", "block", "--trace", str(trace[0]), "--block", "1",
                             "--iter", "0", "--ep-keys", "exact", "--ep-schedule",
                             "sequential")
    assert code != 0 and "exact keys" in err and len(err.strip().splitlines()) == 1, err


def test_sim_block_q_split(cli_run, trace, tmp_path, capsys):
    """``--q-split 6,12``: each head's run in three sub-runs (12 EPRE runs for 4 heads),
    PASS with cycles == model; a split off the EPRE's unit grid, or text, refused in one
    line."""
    r, out = _exact_keys_run(cli_run, trace, tmp_path, "--q-split", "6,12")
    assert r["q_split"] == [6, 12] and "sub-runs from rows 0,6,12" in out
    args = ("sim", "block", "--trace", str(trace[0]), "--block", "1", "--iter", "0",
            "--ep-keys", "exact", "--q-split")
    code, out, err = cli_run(*args, "5")
    assert code != 0 and "q_split" in err and len(err.strip().splitlines()) == 1, err
    with pytest.raises(SystemExit):           # argparse: usage and one error line
        cli_run(*args, "six")
    assert "comma-separated" in capsys.readouterr().err


@pytest.mark.long
def test_sim_block_exact_keys_orders(cli_run, trace, tmp_path):
    """``--q-early off`` and ``--no-key-queue``: PASS with cycles == model, each slower than
    the default (Q early, queued)."""
    best = _exact_keys_run(cli_run, trace, tmp_path)[0]
    late = _exact_keys_run(cli_run, trace, tmp_path, "--q-early", "off")[0]
    inorder = _exact_keys_run(cli_run, trace, tmp_path, "--no-key-queue")[0]
    assert late["key_queue"] and not late["q_early"]
    assert not inorder["key_queue"] and not inorder["q_early"]
    assert best["cycles"] < late["cycles"] < inorder["cycles"]


@pytest.mark.long
def test_sim_block_ep_schedule_auto(cli_run, trace, tmp_path):
    """``auto`` picks the faster of the two schedules (a third block simulation: long)."""
    r = _ep_schedules(cli_run, trace, tmp_path, ("overlap", "sequential", "auto"))
    assert r["auto"]["cycles"] == min(r["overlap"]["cycles"], r["sequential"]["cycles"])


@pytest.mark.long
def test_sim_block_passes(cli_run, trace, tmp_path):
    code, out, err = cli_run("sim", "block", "--trace", str(trace[0]), "--block", "3",
                             "--iter", "2", "--seed", "1", "--json", str(tmp_path / "r.json"))
    assert code == 0 and "PASS" in out, out + err
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["pass"] and r["cycles"] == r["model_cycles"] and not r["dense"]
    assert np.isclose(r["ep_sparsity"], 0.5, atol=0.1)


@pytest.mark.long
@pytest.mark.parametrize("it", [0, 1], ids=["dense", "sparse"])
def test_sim_block_exion16(cli_run, trace, tmp_path, it):
    """The exion16 DSC core (one ~15-30 min Verilator build, cached): block 1 of a dense and
    a sparse iteration, every segment in the core (LN1, EPRE, GEMMs, softmax, LN2, FC1 with
    GELU_OMEM, FFN-Reuse) bit-exact and the total cycles equal to the model (docs/dsc.md section 4)."""
    code, out, err = cli_run("sim", "block", "--config", "exion16", "--trace",
                             str(trace[0]), "--block", "1", "--iter", str(it), "--seed", "1",
                             "--json", str(tmp_path / "r.json"))
    assert code == 0 and "PASS" in out, out + err
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["pass"] and r["cycles"] == r["model_cycles"] and r["dense"] == (it == 0)
    assert {"ln1", "epre", "softmax", "ln2", "fc1_gelu", "ffnr"} <= set(r["gemm_cycles"])


def test_generate_golden(cli_run, tmp_path):
    out = tmp_path / "d.png"
    code, o, err = cli_run("generate", "--digit", "7", "--steps", "2", "--seed", "3",
                           "--out", str(out))
    assert code == 0, err
    assert "equals the golden INT12 sampler's bit for bit" in o
    r = json.loads(out.with_suffix(".json").read_text())
    assert r["equals_golden_sampler"] and r["cycles_per_dense_iteration"] > 0
    assert np.load(out.with_suffix(".npy")).shape == (8, 8) and out.stat().st_size > 0


@pytest.mark.parametrize("argv,word", [(["--digit", "10"], "--digit"),
                                       (["--digit", "1", "--steps", "0"], "steps"),
                                       (["--digit", "1", "--guidance", "0.5"], "guidance"),
                                       (["--digit", "1", "--out", "x.jpg"], "--out")])
def test_generate_bad_input(cli_run, tmp_path, argv, word):
    if "--out" not in argv:
        argv = argv + ["--out", str(tmp_path / "d.png")]
    code, out, err = cli_run("generate", *argv)
    assert code != 0 and word in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())


def test_guided_sampler_is_the_guidance_formula():
    """``sample(..., guidance=w)``: each step's noise estimate is ``e_u + w (e_c - e_u)`` from
    the batch run twice (the digit, then the "no class" label 10), checked against the model
    run by hand for one DDIM step; w = 1 is the unguided sampler."""
    import math

    from exion.workloads.common import alpha_bars
    from exion.workloads.dit import Exion, ddim_timesteps, sample
    model = DiT(load_weights(model="digits16")[0])
    ex = Exion(quant=True)
    x = np.random.default_rng(5).standard_normal((2, 8, 8))
    t = int(ddim_timesteps(1)[0])
    e = model.eps(np.concatenate([x, x]), np.full(4, t), np.array([3, 8, 10, 10]), ex)
    want = e[2:] + 2.5 * (e[:2] - e[2:])
    a = alpha_bars()[t]
    want_img = (x - math.sqrt(1 - a) * want) / math.sqrt(a)   # a_prev = 1 at the last step
    got = sample(model, 2, 1, ex, seed=5, labels=[3, 8], guidance=2.5).images
    np.testing.assert_allclose(got, want_img, rtol=0, atol=1e-12)
    plain = sample(model, 2, 1, ex, seed=5, labels=[3, 8], guidance=1).images
    np.testing.assert_array_equal(plain, sample(model, 2, 1, ex, seed=5, labels=[3, 8]).images)
    assert not np.allclose(plain, got)


def test_generate_guided_batch_runs_both_copies(cli_run, tmp_path, monkeypatch):
    """With guidance every block iteration is run for the digit and for its "no class"
    copy (two DSC programs, samples 0 and 1 of the golden batch), and the report says so;
    with --guidance 1 one program per block iteration."""
    from exion.sim import dsc_program
    seen = []
    real = dsc_program.block_program

    def spy(cfg, rec, sample=0, *args, **kw):
        seen.append(sample)
        return real(cfg, rec, sample, *args, **kw)
    monkeypatch.setattr(dsc_program, "block_program", spy)
    for w, runs in (("2", 2), ("1", 1)):
        seen.clear()
        out = tmp_path / f"g{w}.png"
        code, o, err = cli_run("generate", "--digit", "4", "--steps", "1", "--seed", "2",
                               "--guidance", w, "--out", str(out))
        assert code == 0, err
        r = json.loads(out.with_suffix(".json").read_text())
        assert r["block_runs_per_block_iteration"] == runs and r["guidance"] == float(w)
        assert seen == list(range(runs)) * 4, seen       # 4 blocks of 1 step


@pytest.mark.long
def test_generate_rtl_one_step(cli_run, tmp_path):
    out = tmp_path / "d.png"
    code, o, err = cli_run("generate", "--rtl", "--digit", "2", "--steps", "1", "--seed", "1",
                           "--out", str(out))
    assert code == 0 and "every core segment on the RTL matched" in o, o + err


def test_sim_block_replays_the_traces_model(cli_run, tmp_path, monkeypatch):
    """A digits64 trace is replayed with digits64 (the trace's meta names it), not digits16:
    the replay check passes and the case reaches the RTL run (stubbed here; the RTL run of a
    digits64 block is in docs/fidelity.md / docs/dsc.md)."""
    from exion.sim import dsc_block
    model = DiT(load_weights(model="digits64")[0])
    arrays, meta = collect(model, steps=3, samples=1, seed=4)
    path = tmp_path / "t64.npz"
    save(path, arrays, meta)
    seen = {}

    def stub(cfg, case, *a, **k):
        seen["tokens"] = case.out.shape[-2]
        raise SystemExit(0)
    monkeypatch.setattr(dsc_block, "run_block", stub)
    with pytest.raises(SystemExit):
        cli_run("sim", "block", "--trace", str(path), "--block", "2", "--iter", "1")
    assert seen.get("tokens") == 64, "the digits64 trace did not reach the RTL run"

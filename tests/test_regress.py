"""``exion regress``: seeded RTL cases fanned out on Dask, merged into JSON + JUnit.

* a small toy regress on a LocalCluster (2 workers, batches of 2 seeds) passes and reports
  every seed once;
* the mutation: ``EXION_REGRESS_MUTATE=3`` breaks every third seed in the workers; the
  report lists exactly those seeds, each with a command that re-runs it, and the command
  (run inline) fails on the same seed;
* ``long``: a ``dask scheduler`` and a ``dask worker`` started as subprocesses give the
  same report as the LocalCluster.
"""

import json
import shlex
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from exion.sim.regress import regress, save

pytestmark = pytest.mark.rtl


def _check_files(rep, out: Path):
    js, xml = save(rep, out)
    data = json.loads(js.read_text())
    root = ET.parse(xml).getroot()
    cases = root.findall(".//testcase")
    assert len(cases) == sum(s["cases"] for s in data["summary"].values())
    assert len(root.findall(".//failure")) == len(data["failures"])
    return data


def test_regress_local_cluster_toy(tmp_path):
    rep = regress("toy", ["dpu", "cau"], 4, seed_base=100, batch=2, workers=2,
                  show_progress=False)
    assert rep["passed"], rep["failures"]
    assert [r["seed"] for r in rep["results"]["cau"]] == [100, 101, 102, 103]
    data = _check_files(rep, tmp_path)
    assert data["summary"] == {"dpu": {"cases": 4, "failed": 0},
                               "cau": {"cases": 4, "failed": 0}}


def test_regress_reports_failing_seeds_with_repro(tmp_path, monkeypatch, cli_run):
    monkeypatch.setenv("EXION_REGRESS_MUTATE", "3")   # the workers inherit it
    rep = regress("toy", ["dpu"], 6, seed_base=1, batch=3, workers=1, show_progress=False)
    assert not rep["passed"]
    assert [f["seed"] for f in rep["failures"]] == [3, 6]
    data = _check_files(rep, tmp_path)
    f = data["failures"][0]
    assert f["repro"].startswith("exion regress --block dpu --config toy --seed-base 1 "
                                 "--seeds 3 --batch 3")
    assert "--seed-base 3 --seeds 1" in f["repro_alone"]
    # the repro command fails on the same seed (inline, no Dask)
    code, out, _ = cli_run(*shlex.split(f["repro_alone"])[1:], "--no-progress",
                           "--out", str(tmp_path / "re"))
    assert code == 1 and "FAIL dpu seed 3" in out


def test_regress_bad_input_is_one_line(cli_run, tmp_path):
    code, _, err = cli_run("regress", "--seeds", "0", "--out", str(tmp_path / "x"))
    assert code == 2 and "--seeds" in err and not (tmp_path / "x").exists()


@pytest.mark.long
def test_regress_on_separate_scheduler_and_worker(tmp_path):
    bindir = Path(sys.executable).parent
    sched_file = tmp_path / "scheduler.json"
    sched = subprocess.Popen([str(bindir / "dask"), "scheduler", "--no-dashboard",
                              "--scheduler-file", str(sched_file), "--port", "0"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = None
    try:
        for _ in range(100):
            if sched_file.exists() and sched_file.stat().st_size:
                break
            time.sleep(0.2)
        address = json.loads(sched_file.read_text())["address"]
        worker = subprocess.Popen([str(bindir / "dask"), "worker", address, "--nthreads", "1",
                                   "--nworkers", "1", "--no-dashboard"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        remote = regress("toy", ["dpu", "sdue"], 4, seed_base=7, batch=2,
                         scheduler=address, show_progress=False)
        local = regress("toy", ["dpu", "sdue"], 4, seed_base=7, batch=2, workers=1,
                        show_progress=False)
        strip = ("wall_seconds", "scheduler", "results")
        assert remote["passed"]
        assert {k: v for k, v in remote.items() if k not in strip} == \
            {k: v for k, v in local.items() if k not in strip}
        for b in ("dpu", "sdue"):
            assert [(r["seed"], r["cycles"]) for r in remote["results"][b]] == \
                [(r["seed"], r["cycles"]) for r in local["results"][b]]
    finally:
        for p in (worker, sched):
            if p is not None:
                p.terminate()
                p.wait(timeout=30)


def test_sweep_table_pareto_and_refused_points(cli_run, tmp_path):
    """Cycle-model sweep (inline, no RTL): every point scored or refused, a true Pareto front,
    and the front moves when a point is made worse (the check can fail)."""
    from exion.sim.sweep import pareto
    code, out, err = cli_run("sweep", "--config", "toy", "--vary", "m=1,2,99",
                             "--vary", "bandwidth=16,64", "--scheduler", "inline",
                             "--no-progress", "--out", str(tmp_path))
    assert code == 0, err
    rep = json.loads((tmp_path / "sweep.json").read_text())
    assert len(rep["rows"]) == 6 and (tmp_path / "sweep.png").stat().st_size > 0
    refused = [r for r in rep["rows"] if r["error"]]
    assert [r["point"]["merge_ways"] for r in refused] == [99, 99]     # m > C is refused
    ok = [r for r in rep["rows"] if not r["error"]]
    assert all(r["cycles"] > 0 for r in ok)
    # more bandwidth never costs cycles
    for m in (1, 2):
        c = {r["point"]["gb_bytes_per_cycle"]: r["cycles"] for r in ok
             if r["point"]["merge_ways"] == m}
        assert c[64] <= c[16]
    front = [r for r in rep["rows"] if r.get("pareto")]
    assert front and all(r["cycles"] == min(o["cycles"] for o in ok) for r in front)
    rows = [dict(r) for r in rep["rows"]]
    best = rows.index(front[0])
    rows[best]["cycles"] += 10 ** 9
    assert best not in pareto(rows)
    code, _, err = cli_run("sweep", "--vary", "nosuch=1", "--out", str(tmp_path / "y"))
    assert code == 2 and "nosuch" in err and not (tmp_path / "y").exists()


def test_gemm_regress_cases_cover_the_engine_options():
    """The gemm cases draw the engine's run options (issue 17), every one of them over 200
    seeds, and are valid products the host plans."""
    from exion import PRESETS
    from exion.sim.cases import make_case
    from exion.sim.gemm_rtl import plan_tiles
    cfg = PRESETS["toy"]
    cases = [make_case("gemm", cfg, s) for s in range(1, 201)]
    seen = {("flow", c.dataflow) for c in cases} | {("acc", c.accumulate) for c in cases} | \
        {("gb", c.gb_bytes) for c in cases} | {("k", c.k_chunk) for c in cases} | \
        {("gather", c.gather, c.gather_hw) for c in cases} | \
        {("db", c.double_buffer) for c in cases if c.dataflow == "col-group"}
    for want in [("flow", "row-block"), ("flow", "col-group"), ("acc", True), ("gb", 3),
                 ("gb", 64), ("k", "auto"), ("k", 1), ("gather", True, True),
                 ("gather", True, False), ("db", False)]:
        assert want in seen, want
    striped = [plan_tiles(cfg, c)[0].flow.get("striped") for c in cases
               if c.dataflow == "col-group" and c.mask.any()]
    assert any(striped) and not all(striped)
    # K-splits run (later pieces accumulate), and some products take several column groups
    assert any(t.k0 > 0 for c in cases[:60] for t in plan_tiles(cfg, c))
    assert any(t.flow.get("ngroups", 1) > 1 for c in cases[:60] for t in plan_tiles(cfg, c))


def test_gemm_regress_checks_the_cycle_model():
    """A run whose counted cycles, stalls or words differ from the engine model by one is
    reported (the regression's model check can fail)."""
    import dataclasses

    from exion import PRESETS
    from exion.sim.cases import make_case
    from exion.sim.gemm_rtl import GemmRun, engine_model, model_error
    cfg = PRESETS["toy"]
    case = next(c for c in (make_case("gemm", cfg, s) for s in range(1, 50))
                if c.mask.sum() > 4)
    e = engine_model(cfg, case)
    t = e["tiles"]
    good = GemmRun(None, [x["cycles"] for x in t], [x["passes"] for x in t], len(t),
                   [x["stall"] for x in t], [x["words"] for x in t])
    assert model_error(cfg, case, good) is None
    for field, where in (("tile_cycles", "cycles"), ("tile_words", "words")):
        bad = dataclasses.replace(good, **{field: [v + 1 for v in getattr(good, field)]})
        assert where in model_error(cfg, case, bad)
    assert "tiles" in model_error(cfg, case, dataclasses.replace(good, tile_cycles=[]))

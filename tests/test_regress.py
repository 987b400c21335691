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

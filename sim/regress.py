"""Seeded random RTL regressions fanned out on Dask (``exion regress``).

N seeds per block are cut into batches (``batch`` seeds per task: one simulator launch runs
a whole batch, :func:`exion.sim.cases.run_batch`); the tasks go to a ``dask.distributed``
cluster: a ``LocalCluster`` with one single-threaded worker process per core by default, an
existing scheduler when an address is given, or no Dask at all (``scheduler="inline"``).
Each worker builds or reuses the Verilated model in its own build root (``$EXION_BUILD``
or ``build/`` in its working directory; the file locks of :mod:`exion.sim.runner` make
workers sharing one root build it once). Results merge into one JUnit XML and one JSON
report; every failing seed carries the command that re-runs it.
"""

from __future__ import annotations

import shlex
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from exion.paths import write_json

__all__ = ["regress", "repro_command", "write_junit", "batches", "run_tasks", "Bar"]


def batches(seeds: list[int], size: int) -> list[list[int]]:
    return [seeds[i:i + size] for i in range(0, len(seeds), size)]


def repro_command(block: str, config: str, seed_base: int, seeds: int, batch: int) -> str:
    return (f"exion regress --block {block} --config {shlex.quote(config)} "
            f"--seed-base {seed_base} --seeds {seeds} --batch {batch} --scheduler inline")


def _task(block: str, config: str, seeds: list[int]) -> list[dict]:
    """One batch on a worker: ``[{seed, cycles, error}]`` (errors never raise)."""
    from exion.config import get_config

    from .cases import run_batch
    t0 = time.perf_counter()
    try:
        results = run_batch(block, get_config(config), seeds)
        out = [{"block": block, "seed": r.seed, "cycles": r.cycles, "error": r.error}
               for r in results]
    except Exception as exc:  # noqa: BLE001 - a worker reports, the driver decides
        out = [{"block": block, "seed": s, "cycles": 0, "error": f"{type(exc).__name__}: {exc}"}
               for s in seeds]
    dt = time.perf_counter() - t0
    for o in out:
        o["batch_seconds"] = dt
    return out


class Bar:
    """A one-line text progress bar on stderr: cases done, failures, elapsed."""

    def __init__(self, total: int, enabled: bool = True, label: str = "regress"):
        self.total, self.done, self.failed = total, 0, 0
        self.label = label
        self.t0 = time.perf_counter()
        self.enabled = enabled

    def update(self, n: int, failed: int) -> None:
        self.done += n
        self.failed += failed
        if not self.enabled:
            return
        width = 30
        fill = int(width * self.done / max(1, self.total))
        sys.stderr.write(f"\r[{self.label}] [{'#' * fill}{'.' * (width - fill)}] "
                         f"{self.done}/{self.total} done, {self.failed} failed, "
                         f"{time.perf_counter() - self.t0:.0f} s")
        if self.done >= self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def run_tasks(func, tasks, scheduler: str | None, workers: int | None, bar: Bar):
    """Yield ``func(*task)`` (a list of dicts with ``error``) of each task as it completes:
    inline, on a LocalCluster of ``workers`` single-threaded processes, or on ``scheduler``."""
    if scheduler == "inline":
        for t in tasks:
            res = func(*t)
            bar.update(len(res), sum(r["error"] is not None for r in res))
            yield res
        return
    from dask.distributed import Client, LocalCluster, as_completed
    cluster = None
    if scheduler:
        client = Client(scheduler)
    else:
        import os
        n = workers or os.cpu_count() or 1
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                               dashboard_address=":0")
        client = Client(cluster)
    try:
        futures = [client.submit(func, *t, pure=False) for t in tasks]
        for fut in as_completed(futures):
            res = fut.result()
            bar.update(len(res), sum(r["error"] is not None for r in res))
            yield res
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def regress(config: str, blocks: list[str], n_seeds: int, seed_base: int = 1, *,
            batch: int = 50, scheduler: str | None = None, workers: int | None = None,
            show_progress: bool = True) -> dict:
    """Run ``n_seeds`` seeds of every block; return the merged report (see module doc)."""
    seeds = list(range(seed_base, seed_base + n_seeds))
    tasks = [(b, config, chunk) for b in blocks for chunk in batches(seeds, batch)]
    bar = Bar(len(blocks) * n_seeds, show_progress)
    t0 = time.perf_counter()
    per_block = {b: [] for b in blocks}
    first_of = {}
    for b, _, chunk in tasks:
        for s in chunk:
            first_of[(b, s)] = (chunk[0], len(chunk))
    for res in run_tasks(_task, tasks, scheduler, workers, bar):
        for r in res:
            per_block[r["block"]].append(r)
    wall = time.perf_counter() - t0
    return _report(config, blocks, seeds, batch, scheduler, wall, per_block, first_of)


def _report(config, blocks, seeds, batch, scheduler, wall, per_block, first_of) -> dict:
    failures, summary = [], {}
    for b in blocks:
        rs = sorted(per_block[b], key=lambda r: r["seed"])
        bad = [r for r in rs if r["error"] is not None]
        summary[b] = {"cases": len(rs), "failed": len(bad)}
        for r in bad:
            base, n = first_of[(b, r["seed"])]
            failures.append({
                "block": b, "seed": r["seed"], "error": r["error"],
                "repro": repro_command(b, config, base, n, n),
                "repro_alone": repro_command(b, config, r["seed"], 1, 1)})
    return {"config": config, "blocks": blocks, "seed_base": seeds[0] if seeds else None,
            "seeds": len(seeds), "batch": batch, "scheduler": scheduler or "LocalCluster",
            "wall_seconds": round(wall, 3), "summary": summary, "failures": failures,
            "passed": not failures,
            "results": {b: sorted(per_block[b], key=lambda r: r["seed"]) for b in blocks}}


def write_junit(report: dict, path: str | Path) -> Path:
    """One ``<testsuite>`` per block, one ``<testcase>`` per seed; failures carry the repro."""
    root = ET.Element("testsuites", name=f"exion regress {report['config']}")
    fails = {(f["block"], f["seed"]): f for f in report["failures"]}
    for b in report["blocks"]:
        rs = report["results"][b]
        suite = ET.SubElement(root, "testsuite", name=f"{b}[{report['config']}]",
                              tests=str(len(rs)), failures=str(report["summary"][b]["failed"]))
        for r in rs:
            tc = ET.SubElement(suite, "testcase", classname=f"regress.{b}",
                               name=f"seed{r['seed']}", time=f"{r.get('batch_seconds', 0):.3f}")
            f = fails.get((b, r["seed"]))
            if f:
                el = ET.SubElement(tc, "failure", message=f["error"])
                el.text = f"{f['error']}\nre-run: {f['repro']}\nalone: {f['repro_alone']}"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    return path


def save(report: dict, out_dir: str | Path) -> tuple[Path, Path]:
    """``regress.json`` and ``regress.xml`` (JUnit) in ``out_dir``."""
    out_dir = Path(out_dir)
    slim = {k: v for k, v in report.items() if k != "results"}
    return write_json(out_dir / "regress.json", slim), write_junit(report, out_dir /
                                                                     "regress.xml")


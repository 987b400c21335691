"""The registry of formal proofs: which harness, on which sizes, in which mode and depth.

``fast`` proofs run in the default test suite (``tests/test_formal.py``) and ``make formal``;
``long`` ones only in ``make formal`` / ``make test-long``. Every property group of every
harness has at least one mutant here that must make its proof FAIL (``MUTATIONS``).

Sizes: the properties are generic in the config; the proofs use ``formal_config()`` (the
``tiny`` preset with R = 2 rows: C = 2 slots, m = 2 ways, W_open = 2), small enough for the
SMT solver, with the CAU on 4-column blocks and the EPRE selector on 4 keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from exion.config import PRESETS, Config

from .props_cau import CauProps
from .props_epre import SelectorProps
from .props_stream import GemmPassProps, SdueDescProps
from .sby import SbyResult, run_sby

__all__ = ["Proof", "PROOFS", "MUTATIONS", "formal_config", "run_proof", "run_mutation"]


def formal_config() -> Config:
    """The formal-sized config: the fields of ``configs/tiny.toml`` with 2 rows."""
    return PRESETS["toy"].replace(name="formal", rows=2, cols=2, lanes=2, width=8,
                                  acc_width=24, merge_ways=2, imem_depth=32, wmem_depth=64,
                                  omem_depth=16, k_max=32)


@dataclass(frozen=True)
class Proof:
    """One SymbiYosys task: ``build(props, mutant)`` makes the harness."""

    name: str
    block: str
    build: Callable
    depth: int
    tier: str = "fast"              # "fast" (default suite) or "long"
    mode: str = "bmc"
    cover_depth: int | None = None  # a cover run showing the depth reaches the checks
    mutants: dict = field(default_factory=dict)   # mutant -> property group it breaks
    note: str = ""


def _cau(**kw):
    return lambda props=None, mutant=None: CauProps(formal_config(), props=props,
                                                     mutant=mutant, **kw)


def _sel(**kw):
    return lambda props=None, mutant=None: SelectorProps(formal_config(), props=props,
                                                          mutant=mutant, **kw)


def _sdue(**kw):
    return lambda props=None, mutant=None: SdueDescProps(formal_config(), props=props,
                                                          mutant=mutant, **kw)


def _gemm(**kw):
    return lambda props=None, mutant=None: GemmPassProps(
        formal_config().replace(omem_depth=4), props=props, mutant=mutant, **kw)


_CAU_MUT = {"overlap": "overlap", "members": "members", "cover": "cover", "stable": "stable"}

PROOFS: dict[str, Proof] = {p.name: p for p in [
    Proof("cau", "CAU", _cau(max_cols=4, cols_per_cycle=4, blocks=1, merge_lanes=1),
          depth=18, cover_depth=18, mutants=_CAU_MUT,
          note="one 4-column block from reset, LN = 1 merge lane"),
    Proof("cau_lanes", "CAU", _cau(max_cols=4, cols_per_cycle=4, blocks=1, merge_lanes=2),
          depth=14, tier="long", cover_depth=14,
          note="one 4-column block from reset, LN = 2 merge lanes"),
    Proof("cau_blocks", "CAU", _cau(max_cols=4, cols_per_cycle=2, blocks=2, merge_lanes=1),
          depth=20, tier="long", cover_depth=20,
          note="the 1st or 2nd block of a stream of 2-beat blocks, LN = 1"),
    Proof("epre_sel", "EPRE selector", _sel(n_max=4, rows=1), depth=15, cover_depth=15,
          mutants={"count": "count", "tie": "tie"},
          note="one row of up to 4 keys, 4-bit scores (both network modes: kN > E = 3)"),
    Proof("epre_sel_rows", "EPRE selector", _sel(n_max=4, rows=2), depth=28, tier="long",
          cover_depth=28, note="two rows back to back (the second from the first's state)"),
    Proof("epre_sel6", "EPRE selector", _sel(n_max=6, rows=1), depth=19, tier="long",
          cover_depth=19, note="one row of up to 6 keys (E = 4)"),
    Proof("sdue_desc", "SDUE", _sdue(kmax=3), depth=20, cover_depth=20,
          mutants={"dup": "conserve", "lost": "conserve"},
          note="descriptors of 1..3 beats, back to back or with gaps"),
    Proof("sdue_desc_deep", "SDUE", _sdue(kmax=3), depth=40, tier="long",
          note="as sdue_desc, 40 cycles"),
    Proof("gemm_passes", "gemm engine", _gemm(cols_per_cycle=4, max_regions=2),
          depth=32, tier="long", cover_depth=32, mutants={"lost": "conserve"},
          note="one-beat 4-column blocks (omem_depth = 4), kwords 1..2, vs a reference CAU"),
]}

#: (proof, mutant, property group) triples: each run must FAIL.
MUTATIONS = [(p.name, mu, g) for p in PROOFS.values() for mu, g in p.mutants.items()]


def run_proof(name: str, workdir: str | Path, *, timeout: float | None = None,
              cover: bool = False) -> SbyResult:
    """Run proof ``name`` (every property group on the real design), or its cover task."""
    p = PROOFS[name]
    if cover:
        return run_sby(p.build(), f"{name}_cover", workdir, mode="cover",
                       depth=p.cover_depth or p.depth, timeout=timeout)
    return run_sby(p.build(), name, workdir, mode=p.mode, depth=p.depth, timeout=timeout)


def run_mutation(name: str, mutant: str, workdir: str | Path, *,
                 timeout: float | None = None) -> SbyResult:
    """Run proof ``name``'s property group that ``mutant`` breaks, on the mutant."""
    p = PROOFS[name]
    group = p.mutants[mutant]
    return run_sby(p.build(props=[group], mutant=mutant), f"{name}_mut_{mutant}", workdir,
                   mode=p.mode, depth=p.depth, timeout=timeout)

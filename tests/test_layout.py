"""The repository's layout rules, checked by parsing files (fast, no imports of the project).

* Layering (docs/CONTRIBUTING.md): every ``import`` statement of every module, lazy ones
  inside functions included, resolved to its absolute ``exion...`` name:
  - ``exion`` itself (``exion/``: config, errors, paths) imports no subpackage;
  - ``hw`` never imports ``exion.golden``, ``exion.sim`` or ``exion.gen``;
  - ``golden`` never imports ``exion.hw``, ``exion.sim`` or ``exion.gen``;
  - ``sim`` never imports ``exion.gen.cli``;
  - ``gen`` outside ``gen/cli/`` never imports ``exion.sim`` (so ``sim -> gen`` is one-way).
* Every path the README's tables name exists.
"""

from __future__ import annotations

import ast
import functools
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _package_dirs() -> dict[str, Path]:
    """Import name -> folder, from pyproject.toml's package-dir (the folders are top-level)."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {name: ROOT / folder
            for name, folder in data["tool"]["setuptools"]["package-dir"].items()}


def _modules(package: str) -> list[tuple[str, Path]]:
    """(module name, file) of every .py file of ``package``, subpackages included."""
    base = _package_dirs()[package]
    out = []
    for path in sorted(base.rglob("*.py")):
        rel = path.relative_to(base).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        out.append((".".join([package, *parts]), path))
    return out


def imports_of(module: str, path: Path) -> set[str]:
    """Absolute names of everything ``path`` imports (``from x import y`` gives x and x.y)."""
    is_pkg = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[:len(base) - node.level + (1 if is_pkg else 0)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module
            out.add(name)
            out.update(f"{name}.{alias.name}" for alias in node.names)
    return out


def _violations(package: str, forbidden: tuple[str, ...], skip: str | None = None) -> list[str]:
    bad = []
    for module, path in _modules(package):
        if skip and (module == skip or module.startswith(skip + ".")):
            continue
        for name in sorted(imports_of(module, path)):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    return bad


RULES = {
    "exion-core": ("exion", ("exion.hw", "exion.golden", "exion.sim", "exion.gen",
                             "exion.workloads"), None),
    "hw": ("exion.hw", ("exion.golden", "exion.sim", "exion.gen"), None),
    "golden": ("exion.golden", ("exion.hw", "exion.sim", "exion.gen"), None),
    "sim": ("exion.sim", ("exion.gen.cli",), None),
    "gen-not-cli": ("exion.gen", ("exion.sim",), "exion.gen.cli"),
}


@pytest.mark.parametrize("rule", list(RULES))
def test_layering(rule):
    package, forbidden, skip = RULES[rule]
    bad = _violations(package, forbidden, skip)
    assert not bad, f"layering rule {rule!r} broken:\n" + "\n".join(bad)


def test_import_parser_sees_relative_and_lazy_imports(tmp_path):
    """The checker itself: relative imports resolve, imports inside functions count."""
    f = tmp_path / "x.py"
    f.write_text("from .options import a\nfrom .. import verilog\n"
                 "def f():\n    from exion.sim.runner import rtl_build\n")
    names = imports_of("exion.gen.cli.x", f)
    assert {"exion.gen.cli.options", "exion.gen.verilog", "exion.sim.runner"} <= names
    init = tmp_path / "__init__.py"
    init.write_text("from .gen import register\n")
    assert "exion.gen.cli.gen" in imports_of("exion.gen.cli", init)


# -- README ---------------------------------------------------------------------------------
_TOKEN = re.compile(r"`([^`]+)`")
_EXT = re.compile(r"\.(py|md|toml|v|npz|json|txt)$")


def readme_table_paths() -> list[tuple[str, str]]:
    """(row's first cell, path) for every repository path named in a README table.

    A path is a backticked token with a ``/`` or a file extension; a bare file name is
    relative to the row's folder (first cell). Build outputs (``build/...``), environment
    variables and placeholders are not repository paths.
    """
    out = []
    for line in (ROOT / "README.md").read_text().splitlines():
        if not line.startswith("|") or set(line) <= set("|-: "):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        first = _TOKEN.findall(cells[0])
        folder = first[0] if first and first[0].endswith("/") else ""
        for cell in cells:
            for tok in _TOKEN.findall(cell):
                tok = tok.split(" ")[0]
                if tok.startswith(("build/", "$", ".venv")) or "<" in tok:
                    continue
                if "/" not in tok and not _EXT.search(tok):
                    continue
                if "/" not in tok.rstrip("/"):
                    tok = folder + tok if folder and tok != folder else tok
                out.append((cells[0], tok))
    return out


def test_readme_tables_name_existing_files():
    paths = readme_table_paths()
    assert len(paths) > 40          # the folder table and the block table were parsed
    missing = [f"{row}: {p}" for row, p in paths if not list(ROOT.glob(p.rstrip("/")))]
    assert not missing, "README names files that do not exist:\n" + "\n".join(missing)


# -- imports resolve --------------------------------------------------------------------------
def _all_modules() -> dict[str, Path]:
    return {m: p for pkg in _package_dirs() for m, p in _modules(pkg)}


def unresolved_imports(modules: dict[str, Path]) -> list[str]:
    """``exion...`` imports naming neither a module of the project nor a name defined or
    imported at the top of one (``from exion.x import y``: y is a module or a name in x).

    Testbench modules (``sim/tb_*.py``) are imported by cocotb inside the simulator, so a
    stale import there fails only when a Verilated run starts; this catches it statically.
    """
    known = set(modules)

    @functools.cache        # a module is parsed once, however many imports name it
    def names_in(path: Path) -> set[str]:
        tree = ast.parse(path.read_text(), str(path))
        out = set()
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                out.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    out.update(n.id for n in ast.walk(t) if isinstance(n, ast.Name))
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                out.update((a.asname or a.name).split(".")[0] for a in node.names)
        return out

    bad = []
    for module, path in sorted(modules.items()):
        for name in sorted(imports_of(module, path)):
            if not name.startswith("exion") or name in known:
                continue
            parent, _, attr = name.rpartition(".")
            if parent in known and attr in names_in(modules[parent]):
                continue
            bad.append(f"{path.name} ({module}) imports {name}, which does not exist")
    return bad


def test_every_project_import_resolves():
    bad = unresolved_imports(_all_modules())
    assert not bad, "\n".join(bad)


def test_a_stale_import_is_caught(tmp_path):
    f = tmp_path / "tb_x.py"
    f.write_text("from exion.sim.bench_common import start\nfrom exion.config import Config\n")
    mods = {**_all_modules(), "exion.sim.tb_x": f}
    bad = unresolved_imports(mods)
    assert any("exion.sim.bench_common" in b for b in bad)
    assert not any("exion.config" in b for b in bad)

"""The CLI package: the command registry and the shared option blocks of gen/cli/options.py
(one definition per concern, reused by every command). Fast: parsers and loaders only."""

import argparse
import importlib
import pkgutil

import numpy as np
import pytest

from exion import PRESETS
from exion.errors import ExionError
from exion.gen import cli
from exion.gen.cli import options


def _parsers(parser, path=()):
    """(command path, parser) of every command and sub-command."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


def _options(flag):
    """(command path, action) of every command that has ``flag``."""
    out = []
    for path, p in _parsers(cli.build_parser()):
        for a in p._actions:
            if flag in a.option_strings:
                out.append((" ".join(path), a))
    return out


def test_every_command_module_is_registered():
    """A module of gen/cli/ with register() is a command group and must be in the registry
    (golden_* modules are the `golden` group's sub-commands)."""
    found = {m.name for m in pkgutil.iter_modules(cli.__path__) if m.name != "__main__"
             and hasattr(importlib.import_module(f"exion.gen.cli.{m.name}"), "register")}
    golden = set(importlib.import_module("exion.gen.cli.golden").GOLDEN_MODULES)
    assert found == set(cli.COMMAND_MODULES) | golden
    names = [path[0] for path, _ in _parsers(cli.build_parser()) if len(path) == 1]
    assert names == ["gen", "lint", "demo", "golden", "sim", "synth", "synth-table", "pnr",
                     "accuracy",
                     "trace", "evaluate", "generate", "regress", "sweep",
                     "formal"]


def test_config_option_is_one_block_listing_every_preset():
    acts = _options("--config")
    assert len(acts) >= 10
    helps = {a.help for _, a in acts}
    assert len(helps) == 1, helps                # the same definition everywhere
    for name in PRESETS:
        assert name in next(iter(helps))


@pytest.mark.parametrize("cmd", [["golden", "conmerge"], ["golden", "cycles"], ["gen"],
                                 ["sim", "dpu"], ["synth"], ["demo"]])
def test_config_help_prints_its_default_once(cmd, capsys):
    with pytest.raises(SystemExit):
        cli.main([*cmd, "--help"])
    out = capsys.readouterr().out
    block = out[out.index("\n  --config"):].split("\n  --", 2)[1]
    default = "exion16" if cmd == ["demo"] else "toy"
    assert " ".join(block.split()).count(f"(default: {default})") == 1, block
    for name in PRESETS:
        assert name in block


@pytest.mark.parametrize("flag", ["--waves", "--mask", "--report"])
def test_shared_options_are_identical(flag):
    acts = _options(flag)
    assert len(acts) >= 2, flag
    assert len({a.metavar for _, a in acts}) == 1
    # an optional mask adds what its absence means to the same text
    assert len({a.help.split("; without it")[0] for _, a in acts}) == 1, \
        [(p, a.help) for p, a in acts]


def test_random_seed_option_is_shared():
    random_seed = [(p, a) for p, a in _options("--seed") if a.default is None]
    assert {p for p, _ in random_seed} >= {"demo", "sim dpu", "sim gemm", "sim predict",
                                           "sim cfse", "sim ffnr"}
    assert len({a.help for _, a in random_seed}) == 1


def test_load_mask_messages(tmp_path):
    np.save(tmp_path / "ok.npy", np.array([[1, 0], [0, 1]]))
    np.save(tmp_path / "two.npy", np.full((2, 2), 2))
    np.save(tmp_path / "f.npy", np.full((2, 2), 0.5))
    np.save(tmp_path / "v.npy", np.ones(3, bool))
    m = options.load_mask(str(tmp_path / "ok.npy"))
    assert m.dtype == bool and m.tolist() == [[True, False], [False, True]]
    with pytest.raises(ExionError, match=r"must hold boolean \(0/1\) values, got dtype int64 "
                                         r"with other values"):
        options.load_mask(str(tmp_path / "two.npy"))
    with pytest.raises(ExionError, match=r"must hold boolean \(0/1\) values, got dtype float"):
        options.load_mask(str(tmp_path / "f.npy"))
    with pytest.raises(ExionError, match=r"has shape \(3,\), expected a 2-D array"):
        options.load_mask(str(tmp_path / "v.npy"))
    with pytest.raises(ExionError, match=r"has shape \(2, 2\), expected \(M, N\) = \(2, 3\) "
                                         r"from A and B"):
        options.load_mask(str(tmp_path / "ok.npy"), shape=(2, 3), shape_from="A and B")
    # the shape is checked first (the message names what the shape must be)
    with pytest.raises(ExionError, match=r"has shape \(2, 2\), expected \(M, N\)"):
        options.load_mask(str(tmp_path / "two.npy"), shape=(2, 3))


def test_parser_loads_no_simulation_code():
    """gen/cli imports exion.sim only inside the commands that simulate."""
    import subprocess
    import sys
    code = ("import sys\nfrom exion.gen.cli import build_parser\nbuild_parser()\n"
            "print(sorted(m for m in sys.modules if m.startswith(('cocotb', 'exion.sim'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"

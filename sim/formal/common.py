"""Shared pieces of the property harnesses: property groups, stream-rule checkers, free
inputs held constant, and the reset assumption.

A harness is a ``wiring.Component`` whose ``In`` ports are the solver's free inputs. It
instantiates the design through its ports only, states the environment's obligations with
``Assume`` and the design's with ``Assert`` (each in a named *property group*, so a proof can
enable one group at a time) and marks reachability goals with ``Cover``.
"""

from __future__ import annotations

from amaranth import Module, ResetSignal, Signal, Value
from amaranth.hdl import Assert, Assume, Cover
from amaranth.lib import wiring

__all__ = ["Harness", "stream_stable", "held_constant"]


class Harness(wiring.Component):
    """Base of the property harnesses.

    Parameters
    ----------
    props : iterable of str or None
        Property groups whose ``Assert`` statements are emitted (None: all of ``GROUPS``).
    mutant : str or None
        Name of a deliberately broken variant of the design (one of ``MUTANTS``).
    """

    GROUPS: tuple[str, ...] = ()
    MUTANTS: dict[str, str] = {}

    def __init__(self, signature, *, props=None, mutant: str | None = None):
        props = tuple(self.GROUPS if props is None else props)
        bad = [p for p in props if p not in self.GROUPS]
        if bad or (mutant is not None and mutant not in self.MUTANTS):
            self._MustUse__silence = True       # a refused harness is not an unused one
            what = f"property group(s) {bad}" if bad else f"mutant {mutant!r}"
            raise ValueError(f"{type(self).__name__}: unknown {what}")
        self.props, self.mutant = props, mutant
        super().__init__(signature)

    def check(self, m: Module, group: str, cond, msg: str) -> None:
        """``Assert(cond)`` every cycle when property group ``group`` is enabled."""
        if group not in self.GROUPS:
            raise ValueError(f"unknown property group {group!r}")
        if group in self.props:
            m.d.comb += Assert(cond, f"{group}: {msg}", src_loc_at=1)

    @staticmethod
    def assume(m: Module, cond, msg: str = "") -> None:
        m.d.comb += Assume(cond, msg, src_loc_at=1)

    @staticmethod
    def cover(m: Module, cond, msg: str = "") -> None:
        m.d.comb += Cover(cond, msg, src_loc_at=1)

    @staticmethod
    def no_reset(m: Module) -> None:
        """Registers start at their reset values (RTLIL ``init``); reset is never asserted."""
        m.d.comb += Assume(~ResetSignal("sync"))


def stream_stable(m: Module, valid: Value, ready: Value, payload: Value, name: str):
    """The stream rule of a source as one condition: if the previous cycle had ``valid`` and
    not ``ready``, this cycle has ``valid`` and the same ``payload``. Returns the condition
    (the caller asserts it for a design's output, assumes it for the environment's)."""
    payload = Value.cast(payload)
    stall = Signal(name=f"{name}_stall")
    prev = Signal(len(payload), name=f"{name}_prev")
    m.d.sync += [stall.eq(valid & ~ready), prev.eq(payload)]
    return ~stall | (valid & (payload == prev))


def held_constant(m: Module, value: Value, name: str):
    """A free input the environment holds at its cycle-0 value (a solver-chosen constant).
    Returns the condition to assume."""
    value = Value.cast(value)
    started = Signal(name=f"{name}_started")
    first = Signal(len(value), name=f"{name}_first")
    m.d.sync += [started.eq(1), first.eq(value)]
    return ~started | (value == first)

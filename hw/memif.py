"""The DSC core's port to host memory, and its control port (SPEC 4.5, issue 16).

Two sides build against these signatures and meet in ``hw/dsc_top.py``:

* the **core** (``hw/dsc.py``) is a *memory master*: it issues burst read and write
  commands on :func:`mem_master_signature` and never sees AXI;
* the **bus shell** turns that port into an AXI4 memory-mapped master, and exposes the
  core's :func:`dsc_control_signature` as AXI4-Lite registers (the register map is
  generated from one table into Markdown and a C header).

Memory port (all streams are ``amaranth.lib.stream`` ready/valid; a beat moves when
``valid & ready``; a producer holds ``payload`` stable while ``valid & ~ready``):

``rd_cmd``  (out) ``addr`` byte address (aligned to ``data_bits // 8``), ``beats`` - 1 in
            ``len`` (1..256 beats of ``data_bits``, never crossing a 4 KiB boundary: the
            master splits).
``rd_data`` (in)  ``data``, ``last`` (set on a command's final beat), ``err`` (a SLVERR or
            DECERR response on that beat). Beats return in command order.
``wr_cmd``  (out) as ``rd_cmd``.
``wr_data`` (out) ``data``, ``last`` (the master sets it on a command's final beat); full
            strobes always.
``wr_resp`` (in)  one beat per write command, in order, after its data has been accepted
            by memory; ``err`` as for reads.

Control port (the core's side; the shell maps it onto registers):

``start``      (in)  one-cycle pulse: run the program at ``prog_base``.
``prog_base``  (in)  byte address of the host-generated program (descriptor list).
``iteration``  (in)  diffusion iteration index of this run (the host's counter).
``reuse_n``    (in)  FFN-Reuse period N (an iteration with ``iteration % N == 0`` is dense).
``mode``       (in)  bit 0 EP (eager prediction), bit 1 FFNR (FFN-Reuse); others zero.
``busy``       (out) high from the cycle after ``start`` until the run ends.
``done``       (out) one-cycle pulse when a run ends (with or without error).
``error``      (out) sticky flags of the last run (bit meanings defined by the core and
                     listed in the register map), cleared by ``start``.
``cycles``     (out) cycles of the last (or current) run.
``passes``     (out) SDUE passes issued in the last (or current) run.
``stage``      (out) id of the program step being executed (for status/debug).
"""

from __future__ import annotations

from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["MODE_EP", "MODE_FFNR", "mem_master_signature", "dsc_control_signature"]

MODE_EP = 1 << 0
MODE_FFNR = 1 << 1


def _cmd_layout(addr_bits: int) -> data.StructLayout:
    return data.StructLayout({"addr": addr_bits, "len": 8})


def _rd_layout(data_bits: int) -> data.StructLayout:
    return data.StructLayout({"data": data_bits, "last": 1, "err": 1})


def _wr_layout(data_bits: int) -> data.StructLayout:
    return data.StructLayout({"data": data_bits, "last": 1})


def mem_master_signature(data_bits: int = 64, addr_bits: int = 32) -> wiring.Signature:
    """Burst memory port seen from the master (the core); flip it for the memory side."""
    if data_bits not in (32, 64, 128, 256, 512):
        raise ValueError(f"data_bits must be 32, 64, 128, 256 or 512, got {data_bits}")
    return wiring.Signature({
        "rd_cmd": Out(stream.Signature(_cmd_layout(addr_bits))),
        "rd_data": In(stream.Signature(_rd_layout(data_bits))),
        "wr_cmd": Out(stream.Signature(_cmd_layout(addr_bits))),
        "wr_data": Out(stream.Signature(_wr_layout(data_bits))),
        "wr_resp": In(stream.Signature(data.StructLayout({"err": 1}))),
    })


def dsc_control_signature(addr_bits: int = 32) -> wiring.Signature:
    """Control and status of a DSC core, seen from the core (flip it for the register side)."""
    return wiring.Signature({
        "start": In(1),
        "prog_base": In(addr_bits),
        "iteration": In(16),
        "reuse_n": In(8),
        "mode": In(4),
        "busy": Out(1),
        "done": Out(1),
        "error": Out(8),
        "cycles": Out(32),
        "passes": Out(32),
        "stage": Out(8),
        "engine": Out(1),
    })

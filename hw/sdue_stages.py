"""The SDUE's stages (``hw.sdue.SDUE`` composes them with its memories and DPUs)::

    desc --> SdueIssue --addresses--> IMEM / WMEM --read data--> SdueOperands (beat pipeline,
             i_sw, w_sw) --> DPU array --results--> OmemDrain x R (cv_switch drain, OMEM)

Memories and DPUs stay instances of the SDUE itself (``imemR``, ``wmemC_K``, ``omemR``,
``dpu_R_C``: the names ``gen/fpga.py``'s floorplan places); the stages drive their ports.
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from exion.config import Config, index_bits

from .dpu import operand_layout
from .util import pad_mux as _mux
from .util import pipe_reg

__all__ = ["SdueIssue", "SdueOperands", "OmemDrain"]


class SdueIssue(wiring.Component):
    """Issue stage: takes pass descriptors and issues their beats' memory addresses.

    A pass occupies the stage for ``max(kwords, C)`` cycles (``max(kwords, C / D)`` with
    ``wide``, ``cfg.omem_drain`` D > 1); its beats are issued in the last ``kwords``
    cycles. A new descriptor is taken in the last cycle of a period (no bubble). Every
    signal the memories and beat flags see is a register: the addresses count up from the
    descriptor's bases, ``lead_left`` counts the idle cycles before beat 0 down,
    ``left`` the beats still to issue, ``last_r`` is ``left == 1`` one cycle ahead, and
    ``ending`` (the period's last cycle) is its own register, so ``desc.ready`` is one LUT
    from flip-flops (the ECP5 critical path once, docs/fpga.md). The control is three flag
    registers (``active``, ``issuing``, ``ending``) rather than an FSM for that reason.

    Parameters
    ----------
    cfg : Config

    Members
    -------
    desc : In(stream.Signature(pass_layout(cfg)))
    cur : Out(pass_layout(cfg))
        The descriptor being issued (registered at ``accept``).
    iaddr : Out(imem_addr_bits + 1); waddr : Out(ArrayLayout(wmem_addr_bits + 1, m))
        The beat's IMEM address and WMEM address per weight bus; with a ``woff`` field in
        the descriptor (``pass_layout(cfg, wcols=True)``, the col-group gemm engine)
        ``waddr`` is one address per (bank c, bus k): ``wbase[k] + woff[c][k] + beat``.
    issuing : Out(1)
        A beat is issued this cycle.
    first : Out(1)
        The beat is the pass's first.
    ending : Out(1)
        The last cycle of the period (the pass's last beat).
    active : Out(1)
        A pass occupies the stage.
    wide : In(1), only with ``cfg.omem_drain`` D > 1
        The run's passes drain D columns per cycle: the period's floor is C / D.

    Latency: the first beat issues ``max(0, C - kwords)`` cycles after the descriptor
    (``C / D`` for C with ``wide``).
    """

    def __init__(self, cfg: Config, desc_layout):
        self.cfg = cfg
        fields = getattr(desc_layout, "members", {})
        self.wcols = "woff" in fields
        wa = data.ArrayLayout(cfg.wmem_addr_bits + 1, cfg.merge_ways)
        if self.wcols:
            wa = data.ArrayLayout(wa, cfg.cols)
        members = {
            "desc": In(stream.Signature(desc_layout)), "cur": Out(desc_layout),
            "iaddr": Out(cfg.imem_addr_bits + 1),
            "waddr": Out(wa),
            "issuing": Out(1), "first": Out(1), "ending": Out(1), "active": Out(1)}
        if cfg.omem_drain > 1:
            members["wide"] = In(1)
        super().__init__(members)

    def elaborate(self, platform):
        cfg = self.cfg
        C, m = cfg.cols, cfg.merge_ways
        mod = Module()
        cur = self.cur
        active = Signal(name="active")
        issuing = Signal(name="issuing")
        first_r = Signal(name="first_r")                  # the next beat is beat 0
        last_r = Signal(name="last_r")                    # the next beat is the last one
        lead_left = Signal(range(C + 1), name="lead_left")  # idle cycles left before beat 0
        left = Signal(range(2 * cfg.imem_words + 1), name="left")  # beats left to issue
        ending = Signal(name="ending")
        accept = Signal(name="accept")
        mod.d.comb += [
            self.desc.ready.eq(~active | ending),
            accept.eq(self.desc.valid & self.desc.ready),
            self.issuing.eq(issuing), self.first.eq(issuing & first_r),
            self.ending.eq(ending), self.active.eq(active),
        ]
        # the period's floor: C, or C / D in a wide run (omem_drain: the drain's length)
        floor = C if cfg.omem_drain == 1 else Mux(self.wide, C // cfg.omem_drain, C)
        with mod.If(accept):
            kw = self.desc.payload.kwords
            mod.d.sync += [
                cur.eq(self.desc.payload), active.eq(1), first_r.eq(1),
                issuing.eq(kw >= floor), lead_left.eq(floor - kw), left.eq(kw),
                last_r.eq(kw <= 1),       # (kwords = 0 is out of contract; it runs as 1)
                ending.eq((kw >= floor) & (kw <= 1)),
                self.iaddr.eq(self.desc.payload.ibase),
            ]
            if self.wcols:
                pl = self.desc.payload
                mod.d.sync += [self.waddr[c][k].eq(pl.wbase[k] + pl.woff[c][k])
                               for c in range(C) for k in range(m)]
            else:
                mod.d.sync += [self.waddr[k].eq(self.desc.payload.wbase[k]) for k in range(m)]
        with mod.Elif(issuing):
            mod.d.sync += [self.iaddr.eq(self.iaddr + 1), left.eq(left - 1),
                           last_r.eq(left == 2), first_r.eq(0),
                           ending.eq(~last_r & (left == 2))]
            if self.wcols:
                mod.d.sync += [self.waddr[c][k].eq(self.waddr[c][k] + 1)
                               for c in range(C) for k in range(m)]
            else:
                mod.d.sync += [self.waddr[k].eq(self.waddr[k] + 1) for k in range(m)]
            with mod.If(last_r):
                mod.d.sync += [active.eq(0), issuing.eq(0)]
        with mod.Elif(active):
            mod.d.sync += lead_left.eq(lead_left - 1)
            with mod.If(lead_left == 1):
                mod.d.sync += [issuing.eq(1), ending.eq(last_r)]
        return mod


class SdueOperands(wiring.Component):
    """Beat pipeline, i_sw and w_sw: from the memories' read data to the DPU inputs.

    Stage 1: the memory read data (plus the beat flags and selects, registered beside it).
    With ``sdue_pipe``: stage 2 registers the memory outputs, stage 3 the switched operands
    at the DPU inputs. With ``sdue_pipe_isw``: each row's R:1 i_sw mux in two registered
    R/2:1 halves, the final 2:1 in stage 3. Datapath registers have no clock enable (the
    beat-valid flags say which cycles matter); only the flags reset.

    Parameters
    ----------
    cfg : Config

    Members
    -------
    issuing, first, ending : In(1)
        The issue stage's beat flags (a beat, its pass's first, its pass's last).
    sel : In(pass_layout(cfg)["sel"]); isel : In(pass_layout(cfg)["isel"])
        The pass's selects (registered with the beat).
    imem : In(ArrayLayout(word, R)); wmem : In(ArrayLayout(ArrayLayout(word, m), C))
        Memory read data, one cycle after the address.
    a : Out(ArrayLayout(word, R))
        Row r's input vector (after the i_sw).
    b : Out(ArrayLayout(ArrayLayout(word, C), R))
        DPU (r, c)'s weight vector (after the w_sw).
    valid : Out(ArrayLayout(ArrayLayout(1, C), R))
        DPU (r, c) computes this beat.
    dpu_first, dpu_last : Out(1)
    in_flight : Out(1)
        A beat is in the pipeline.

    Latency: ``cfg.sdue_in_latency`` cycles from the address to the DPU inputs (one of them
    the memory read).
    """

    def __init__(self, cfg: Config, sel_shape, isel_shape):
        self.cfg = cfg
        R, C, m = cfg.rows, cfg.cols, cfg.merge_ways
        word = operand_layout(cfg)
        super().__init__({
            "issuing": In(1), "first": In(1), "ending": In(1),
            "sel": In(sel_shape), "isel": In(isel_shape),
            "imem": In(data.ArrayLayout(word, R)),
            "wmem": In(data.ArrayLayout(data.ArrayLayout(word, m), C)),
            "a": Out(data.ArrayLayout(word, R)),
            "b": Out(data.ArrayLayout(data.ArrayLayout(word, C), R)),
            "valid": Out(data.ArrayLayout(data.ArrayLayout(1, C), R)),
            "dpu_first": Out(1), "dpu_last": Out(1), "in_flight": Out(1)})

    def elaborate(self, platform):
        cfg = self.cfg
        R, C, m = cfg.rows, cfg.cols, cfg.merge_ways
        mod = Module()
        word = operand_layout(cfg)
        pipe = cfg.sdue_pipe

        def stage(value, name, enable=None, control=False):
            return pipe_reg(mod, value, name, enable, control)

        # Stage 1: memory read data; flags and selects travel with it.
        b_valid = stage(self.issuing, "b_valid1", control=True)
        b_first = stage(self.first, "b_first1", control=True)
        b_last = stage(self.ending, "b_last1", control=True)
        sel_d = stage(self.sel, "sel1")
        isel_d = stage(self.isel, "isel1")
        imem_data = [self.imem[r] for r in range(R)]
        wmem_data = [[self.wmem[c][k] for k in range(m)] for c in range(C)]
        ctl_valid = [b_valid]                 # every beat-valid register (for ``in_flight``)

        def beat_stage(n):
            """Stage ``n`` of what travels with the beat: DPU selects, flags, WMEM data."""
            nonlocal sel_d, b_first, b_last, b_valid, wmem_data
            wmem_data = [[stage(v, f"wmem_q{n}_{c}_{k}") for k, v in enumerate(p)]
                         for c, p in enumerate(wmem_data)]
            sel_d = stage(sel_d, f"sel{n}")
            b_first = stage(b_first, f"b_first{n}", control=True)
            b_last = stage(b_last, f"b_last{n}", control=True)
            b_valid = stage(b_valid, f"b_valid{n}", control=True)
            ctl_valid.append(b_valid)

        if pipe:
            # Stage 2: registered memory outputs (FPGA block RAM output registers).
            imem_data = [stage(v, f"imem_q{r}") for r, v in enumerate(imem_data)]
            isel_d = stage(isel_d, "isel2")
            beat_stage(2)
        row_pre = None
        if cfg.sdue_pipe_isw:
            # Stage 2b: the i_sw's R:1 mux in two halves, registered, and the select's MSB
            # beside them; the final 2:1 comes in stage 3.
            nb = len(isel_d[0])
            row_pre = []
            for r in range(R):
                if nb == 0:
                    row_pre.append(stage(imem_data[0], f"isw_q{r}"))
                    continue
                half = 1 << (nb - 1)
                low_bits = isel_d[r][:nb - 1]
                lo = stage(_mux(imem_data[:half], low_bits), f"isw_lo{r}")
                hi = stage(_mux(imem_data[half:], low_bits), f"isw_hi{r}")
                msb = stage(isel_d[r][nb - 1], f"isw_msb{r}")
                row_pre.append(Mux(msb, hi, lo))
            beat_stage(3)

        if pipe:   # stage 3: switched operands registered at the DPU inputs
            d_first = stage(b_first, "dpu_first", control=True)
            d_last = stage(b_last, "dpu_last", control=True)
            d_any = stage(b_valid, "dpu_any", control=True)
            ctl_valid.append(d_any)
        else:
            d_first, d_last = b_first, b_last
        # The outputs are wide (exion16: b is 49,152 bits); Amaranth checks every bit of a
        # statement's target signal, so each output gets one statement (a Cat of its
        # elements, row-major like the ArrayLayout), not one per element.
        a_parts, b_parts, valid_parts = [], [], []
        for r in range(R):
            row_in = Signal(word, name=f"row_in{r}")
            mod.d.comb += row_in.eq(row_pre[r] if row_pre is not None
                                    else _mux(imem_data, isel_d[r]))
            if pipe:
                row_in = stage(row_in, f"row_q{r}")
            a_parts.append(row_in.as_value())
            for c in range(C):
                s = sel_d[r][c]
                wsel = _mux(wmem_data[c], s.idx)
                valid = b_valid & s.valid
                if pipe:
                    wsel = stage(wsel, f"w_q{r}_{c}")
                    valid = stage(valid, f"valid_q{r}_{c}", control=True)
                b_parts.append(Value.cast(wsel))
                valid_parts.append(Value.cast(valid))
        for port, parts in ((self.a, a_parts), (self.b, b_parts), (self.valid, valid_parts)):
            assert all(len(v) == len(parts[0]) for v in parts)
            assert len(Cat(*parts)) == len(port.as_value())
            mod.d.comb += port.as_value().eq(Cat(*parts))
        mod.d.comb += [self.dpu_first.eq(d_first), self.dpu_last.eq(d_last),
                       self.in_flight.eq(Cat(*ctl_valid).any())]
        return mod


class OmemDrain(wiring.Component):
    """One OMEM bank's share of the cv_switch: drain a pass's row of results into OMEM.

    At ``load`` the row's C results, OMEM addresses and valid bits enter a shift register
    (the head entry is always column 0: no C:1 mux in front of OMEM); while ``draining`` it
    shifts one column per cycle. Per entry: R stage (read the old value at its address), D
    stage (wait for the read data), [Q stage (read data registered, ``sdue_pipe``)], write
    ``value`` or ``old + value`` (``acc``). Without ``sdue_pipe`` the read port is
    transparent; with it the two writes a read cannot see are forwarded from registers.
    Host access (write, read) goes to the same ports while the SDUE is idle.

    With ``cfg.omem_drain`` D > 1 the bank is D sub-banks (address ``a`` in sub-bank ``a %
    D`` at ``a // D``), each with its own read and write port and its own R/D/Q/write
    stages (a *lane*). A ``wide`` run shifts D columns per cycle and lane s takes the head
    entry whose address is s mod D (the run's contract: the D heads' addresses are distinct
    mod D); otherwise one column per cycle, the head to the lane of its address. Each lane
    sees its entries in order, so its forwarding is the single bank's.

    Parameters
    ----------
    cfg : Config

    Members
    -------
    load : In(1)
        Capture this pass's row of results (the row's DPU result strobes).
    vals : In(ArrayLayout(signed(A), C)); addrs : In(ArrayLayout(omem_addr_bits, C))
    valids : In(C)
        Results, OMEM addresses and which DPUs computed (at ``load``).
    draining, acc : In(1)
        The drain is running (shared by the banks) / add into OMEM.
    wide : In(1)
        Only with D > 1: the run drains D columns per cycle.
    busy : In(1)
        The SDUE is busy (gates the host's write).
    host_we : In(1); host_waddr : In(omem_addr_bits); host_wdata : In(signed(A))
    host_raddr : In(omem_addr_bits)
    rd_addr : Out(ArrayLayout(sub_bits, D)); rd_data : In(ArrayLayout(signed(A), D))
        The sub-banks' read ports (``sub_bits`` = ``omem_addr_bits - log2(D)``).
    we : Out(D); waddr : Out(ArrayLayout(sub_bits, D)); wdata : Out(ArrayLayout(signed(A), D))
        The sub-banks' write ports.

    Latency: an entry is written ``cfg.sdue_drain_latency`` cycles after its read.
    """

    def __init__(self, cfg: Config):
        self.cfg = cfg
        A, C, ab = cfg.acc_width, cfg.cols, cfg.omem_addr_bits
        D = cfg.omem_drain
        sb = index_bits(cfg.omem_depth // D)
        members = {
            "load": In(1), "vals": In(data.ArrayLayout(signed(A), C)),
            "addrs": In(data.ArrayLayout(unsigned(ab), C)), "valids": In(C),
            "draining": In(1), "acc": In(1), "busy": In(1),
            "host_we": In(1), "host_waddr": In(ab), "host_wdata": In(signed(A)),
            "host_raddr": In(ab),
            "rd_addr": Out(data.ArrayLayout(unsigned(sb), D)),
            "rd_data": In(data.ArrayLayout(signed(A), D)),
            "we": Out(D), "waddr": Out(data.ArrayLayout(unsigned(sb), D)),
            "wdata": Out(data.ArrayLayout(signed(A), D))}
        if D > 1:
            members["wide"] = In(1)
        super().__init__(members)

    def elaborate(self, platform):
        cfg = self.cfg
        A, C, ab = cfg.acc_width, cfg.cols, cfg.omem_addr_bits
        D = cfg.omem_drain
        kb = D.bit_length() - 1                     # address bits that pick the sub-bank
        mod = Module()

        dval = [Signal(signed(A), name=f"dval{c}", reset_less=True) for c in range(C)]
        daddr = [Signal(ab, name=f"daddr{c}", reset_less=True) for c in range(C)]
        dvalid = Signal(C, name="dvalid")
        wide = self.wide if D > 1 else None
        with mod.If(self.load):
            mod.d.sync += [dval[c].eq(self.vals[c]) for c in range(C)]
            mod.d.sync += [daddr[c].eq(self.addrs[c]) for c in range(C)]
            mod.d.sync += dvalid.eq(self.valids)
        if D > 1:
            with mod.Elif(wide):
                for c in range(C - D):
                    mod.d.sync += [dval[c].eq(dval[c + D]), daddr[c].eq(daddr[c + D])]
                mod.d.sync += dvalid.eq(dvalid[D:])
        with mod.Else():
            for c in range(C - 1):
                mod.d.sync += [dval[c].eq(dval[c + 1]), daddr[c].eq(daddr[c + 1])]
            mod.d.sync += dvalid.eq(dvalid[1:])
        for s in range(D):
            if D == 1:
                hit = [dvalid[0]]
            else:       # the heads this lane may take: all D in a wide run, else head 0
                hit = [dvalid[j] & (daddr[j][:kb] == s) & (wide if j else 1)
                       for j in range(D)]
            sel_valid = Cat(*hit).any()
            sel_addr = Signal(ab, name=f"sel_addr{s}")
            sel_val = Signal(signed(A), name=f"sel_val{s}")
            mod.d.comb += [sel_addr.eq(daddr[0]), sel_val.eq(dval[0])]
            for j in range(1, D):
                with mod.If(hit[j]):
                    mod.d.comb += [sel_addr.eq(daddr[j]), sel_val.eq(dval[j])]
            self._lane(mod, s, sel_valid, sel_addr, sel_val, kb)
        return mod

    def _lane(self, mod, s, sel_valid, head_addr, head_val, kb):
        """Lane (sub-bank) ``s``: read, [register], add and write the entries it takes."""
        cfg = self.cfg
        A, D = cfg.acc_width, cfg.omem_drain

        def stage(value, name, control=False):
            return pipe_reg(mod, value, f"{name}{s}" if D > 1 else name, control=control)

        def nm(name):
            return f"{name}{s}" if D > 1 else name

        def mine(addr):         # the host address is in this sub-bank
            return 1 if D == 1 else addr[:kb] == s

        w_valid = Signal(name=nm("w_valid"))
        w_addr = Signal(cfg.omem_addr_bits, name=nm("w_addr"), reset_less=True)
        w_val = Signal(signed(A), name=nm("w_val"), reset_less=True)
        mod.d.sync += [w_valid.eq(self.draining & sel_valid),
                       w_addr.eq(head_addr), w_val.eq(head_val)]
        mod.d.comb += self.rd_addr[s].eq(Mux(self.draining, head_addr, self.host_raddr)[kb:])
        rd_data = self.rd_data[s]
        if cfg.sdue_pipe:
            # Q stage: the read data straight into a register; the two drain writes this
            # read cannot see are forwarded, newest first: the write in the cycle after the
            # read (the entry ahead, compared with w_addr) and the write in the cycle of the
            # read (compared with the read address, head_addr). The accumulate flag is one
            # register per bank (a shared one crossed the die once OMEM was floorplanned).
            w_acc_r = Signal(name=nm("w_acc"), reset_less=True)
            mod.d.sync += w_acc_r.eq(self.draining & sel_valid & self.acc)
            x_acc = stage(w_acc_r, "x_acc")
            x_valid = stage(w_valid, "x_valid", control=True)
            x_addr = stage(w_addr, "x_addr")
            x_val = stage(w_val, "x_val")
            x_raw = stage(rd_data, "x_raw")
            x_new = Signal(signed(A), name=nm("x_new"))
            fwd_a = stage(x_valid & (x_addr == w_addr), "fwd_a", control=True)
            fwd_a_val = stage(x_new, "fwd_a_val")
            fwd_b = stage(stage(x_valid & (x_addr == head_addr), "fwd_b1", control=True),
                          "fwd_b", control=True)
            fwd_b_val = stage(fwd_a_val, "fwd_b_val")  # x_new two cycles back
            x_old = Mux(fwd_a, fwd_a_val, Mux(fwd_b, fwd_b_val, x_raw))
            mod.d.comb += x_new.eq(x_val + Mux(x_acc, x_old, 0))
            wr_valid, wr_addr, wr_data = x_valid, x_addr, x_new
        else:
            w_acc = Signal(name=nm("w_acc"), reset_less=True)   # one cycle after acc
            mod.d.sync += w_acc.eq(self.acc)
            wr_valid, wr_addr = w_valid, w_addr
            wr_data = w_val + Mux(w_acc, rd_data, 0)
        # The drain's write (a flip-flop, local to the bank) selects the write port's
        # address and data; ``busy`` only gates the host's enable.
        mod.d.comb += [
            self.we[s].eq(wr_valid | (~self.busy & self.host_we & mine(self.host_waddr))),
            self.waddr[s].eq(Mux(wr_valid, wr_addr, self.host_waddr)[kb:]),
            self.wdata[s].eq(Mux(wr_valid, wr_data, self.host_wdata)),
        ]

// Behavioural simulation model of the Lattice ECP5 fabric flip-flop TRELLIS_FF, for the
// simulations and lint runs of Verilator. Part of exion: the generated Verilog instantiates TRELLIS_FF for copies of one
// register when a config builds for ECP5 (hw/ecp5.py, ff_copies: Yosys would merge
// identical Amaranth registers); synthesis uses the real cell, simulation this file.
//
// Only the subset hw/ecp5.py instantiates is modelled; other parameter values stop the
// simulation at time 0: a D flip-flop on the rising edge of CLK (CLKMUX "CLK"), always
// enabled (CEMUX "1", so there is no CE port), with the set/reset input LSR tied low
// (LSRMUX "LSR", REGSET "RESET"), powering up at zero. Cell description: the Yosys ECP5 cell
// library (share/lattice/cells_sim_ecp5.v, and the mapping of a plain $_DFF_P_ in
// cells_map_trellis.v, which this subset is).

module TRELLIS_FF (
    input CLK, LSR, DI,
    output reg Q
);
    parameter GSR = "AUTO";
    parameter CEMUX = "1";
    parameter CLKMUX = "CLK";
    parameter LSRMUX = "LSR";
    parameter REGSET = "RESET";

    initial begin
        Q = 1'b0;
        if (CEMUX != "1" || CLKMUX != "CLK" || LSRMUX != "LSR" || REGSET != "RESET") begin
            $display("TRELLIS_FF model: unsupported parameters (see sim/models/TRELLIS_FF.v)");
            $stop;
        end
    end

    always @(posedge CLK)
        Q <= LSR ? 1'b0 : DI;

    wire _unused = &{1'b0, GSR == "AUTO"};
endmodule

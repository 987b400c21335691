// Behavioural simulation model of the Lattice ECP5 MULT18X18D (sysDSP 18 x 18 multiplier),
// for Verilator. Part of exion: the generated Verilog instantiates MULT18X18D when a config
// sets dpu_mult = "ecp5" (hw/ecp5.py); synthesis uses the real cell (Yosys and nextpnr know
// it), simulation uses this file (Yosys ships no simulation model of the cell).
//
// Only the subset hw/ecp5.py instantiates is modelled; other parameter values stop the
// simulation at time 0:
//   P = A * B, 36 bits, each operand signed when SIGNEDA / SIGNEDB is 1;
//   A/B input registers and the output register, each "NONE" or clocked by "CLK0"
//   (REG_*_CLK), with clock enable "CE0" or "CE1" (REG_*_CE); like the cell, a register
//   takes one clock edge and powers up at zero. No pipeline register, no reset inputs, no
//   cascade (SOURCEA / SOURCEB are ignored and must be 0), no C input, no shift outputs.
// Cell description: Lattice TN1267, "ECP5 and ECP5-5G sysDSP Usage Guide".

module MULT18X18D (
    input A0, A1, A2, A3, A4, A5, A6, A7, A8, A9, A10, A11, A12, A13, A14, A15, A16, A17,
    input B0, B1, B2, B3, B4, B5, B6, B7, B8, B9, B10, B11, B12, B13, B14, B15, B16, B17,
    input SIGNEDA, SIGNEDB, SOURCEA, SOURCEB,
    input CLK0, CE0, CE1,
    output P0, P1, P2, P3, P4, P5, P6, P7, P8, P9, P10, P11, P12, P13, P14, P15, P16, P17, P18, P19, P20, P21, P22, P23, P24, P25, P26, P27, P28, P29, P30, P31, P32, P33, P34, P35
);
    parameter REG_INPUTA_CLK = "NONE";
    parameter REG_INPUTA_CE = "CE0";
    parameter REG_INPUTB_CLK = "NONE";
    parameter REG_INPUTB_CE = "CE0";
    parameter REG_OUTPUT_CLK = "NONE";
    parameter REG_OUTPUT_CE = "CE0";

    localparam REG_A = REG_INPUTA_CLK == "CLK0";
    localparam REG_B = REG_INPUTB_CLK == "CLK0";
    localparam REG_P = REG_OUTPUT_CLK == "CLK0";

    initial begin
        if (!(REG_A || REG_INPUTA_CLK == "NONE") || !(REG_B || REG_INPUTB_CLK == "NONE") ||
            !(REG_P || REG_OUTPUT_CLK == "NONE") ||
            !(REG_INPUTA_CE == "CE0" || REG_INPUTA_CE == "CE1") ||
            !(REG_INPUTB_CE == "CE0" || REG_INPUTB_CE == "CE1") ||
            !(REG_OUTPUT_CE == "CE0" || REG_OUTPUT_CE == "CE1")) begin
            $display("MULT18X18D model: unsupported parameters (see sim/models/MULT18X18D.v)");
            $stop;
        end
    end

    wire ce_a = REG_INPUTA_CE == "CE1" ? CE1 : CE0;
    wire ce_b = REG_INPUTB_CE == "CE1" ? CE1 : CE0;
    wire ce_p = REG_OUTPUT_CE == "CE1" ? CE1 : CE0;

    wire [17:0] a_in = {A17, A16, A15, A14, A13, A12, A11, A10, A9, A8, A7, A6, A5, A4, A3, A2, A1, A0};
    wire [17:0] b_in = {B17, B16, B15, B14, B13, B12, B11, B10, B9, B8, B7, B6, B5, B4, B3, B2, B1, B0};
    reg [17:0] a_q, b_q;
    reg signa_q, signb_q;
    reg [35:0] p_q;
    initial begin
        a_q = 18'd0;
        b_q = 18'd0;
        signa_q = 1'b0;
        signb_q = 1'b0;
        p_q = 36'd0;
    end

    always @(posedge CLK0) begin
        if (ce_a) begin
            a_q <= a_in;
            signa_q <= SIGNEDA;
        end
        if (ce_b) begin
            b_q <= b_in;
            signb_q <= SIGNEDB;
        end
    end
    wire [17:0] a = REG_A ? a_q : a_in;
    wire [17:0] b = REG_B ? b_q : b_in;
    wire sa = REG_A ? signa_q : SIGNEDA;
    wire sb = REG_B ? signb_q : SIGNEDB;
    wire [35:0] a_ext = {{18{sa & a[17]}}, a};
    wire [35:0] b_ext = {{18{sb & b[17]}}, b};
    wire [35:0] product = a_ext * b_ext;  // low 36 bits: the same for signed and unsigned

    always @(posedge CLK0) begin
        if (ce_p)
            p_q <= product;
    end
    wire [35:0] p_out = REG_P ? p_q : product;
    assign P0 = p_out[0];
    assign P1 = p_out[1];
    assign P2 = p_out[2];
    assign P3 = p_out[3];
    assign P4 = p_out[4];
    assign P5 = p_out[5];
    assign P6 = p_out[6];
    assign P7 = p_out[7];
    assign P8 = p_out[8];
    assign P9 = p_out[9];
    assign P10 = p_out[10];
    assign P11 = p_out[11];
    assign P12 = p_out[12];
    assign P13 = p_out[13];
    assign P14 = p_out[14];
    assign P15 = p_out[15];
    assign P16 = p_out[16];
    assign P17 = p_out[17];
    assign P18 = p_out[18];
    assign P19 = p_out[19];
    assign P20 = p_out[20];
    assign P21 = p_out[21];
    assign P22 = p_out[22];
    assign P23 = p_out[23];
    assign P24 = p_out[24];
    assign P25 = p_out[25];
    assign P26 = p_out[26];
    assign P27 = p_out[27];
    assign P28 = p_out[28];
    assign P29 = p_out[29];
    assign P30 = p_out[30];
    assign P31 = p_out[31];
    assign P32 = p_out[32];
    assign P33 = p_out[33];
    assign P34 = p_out[34];
    assign P35 = p_out[35];

    // Cascade selects: not modelled (the cell's own multiplier inputs are always used).
    wire _unused = &{1'b0, SOURCEA, SOURCEB, 1'b0};
endmodule

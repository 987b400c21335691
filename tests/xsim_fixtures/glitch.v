// A busy flag that glitches like a two-stage engine handing over: at cycle 3 stage A
// clears busy and stage B sets it again in the same time step (#0: a later delta cycle).
// busy really falls at cycle 8. `count` counts clock edges since reset.
module glitch(input clk, input rst, output reg busy, output reg [7:0] count);
  initial begin busy = 1'b0; count = 8'd0; end
  always @(posedge clk) begin
    if (rst) begin
      count <= 8'd0;
      busy = 1'b1;
    end else begin
      count <= count + 8'd1;
      if (count == 8'd3) begin
        busy = 1'b0;      // stage A done
        #0 busy = 1'b1;   // stage B takes over in the same time step
      end
      if (count == 8'd8) busy = 1'b0;
    end
  end
endmodule

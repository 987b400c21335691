"""cocotb bench for glitch.v: the shared ``wait_idle`` must return after the real fall of
``busy`` (count 9 at the following falling edge), not at the zero-time glitch (count 4).
``EXION_PARAMS={"naive": true}`` uses the old helper (bare ``FallingEdge(busy)``) instead and
records where it returns, so the test shows the check can fail."""

import json
import os

import cocotb
from cocotb.triggers import FallingEdge

from exion.sim.tb_common import start, wait_idle


async def naive_wait_idle(dut):
    if int(dut.busy.value):
        await FallingEdge(dut.busy)
    await FallingEdge(dut.clk)


@cocotb.test()
async def wait_idle_after_glitch(dut):
    await start(dut)
    naive = json.loads(os.environ.get("EXION_PARAMS", "{}")).get("naive", False)
    await (naive_wait_idle(dut) if naive else wait_idle(dut))
    with open(os.environ["EXION_REPORT"], "w") as fh:
        json.dump({"count": int(dut.count.value)}, fh)

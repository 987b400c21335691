"""EXION accelerator generator.

Subpackages (each a top-level folder of the repository):

* ``exion.golden`` (``golden/``): NumPy reference models and the cycle model; no Amaranth.
* ``exion.hw`` (``hw/``): Amaranth ``wiring.Component`` hardware blocks.
* ``exion.gen`` (``gen/``): Verilog generation, manifests, the Verilator toolchain and lint,
  the FPGA flow (``exion.gen.fpga``) and the ``exion`` CLI (``exion.gen.cli``).
* ``exion.sim`` (``sim/``): cocotb testbenches, ``rtl_<block>`` wrappers and the Verilator
  runner layer.

``exion`` itself (``config``, ``errors``, ``paths``) imports none of them. Import direction:
``hw`` and ``golden`` import neither each other nor ``sim``/``gen``; ``sim`` may import
``gen`` but never ``gen.cli``; ``gen`` outside ``gen.cli`` never imports ``sim``
(tests/test_layout.py, docs/CONTRIBUTING.md).
"""

from .config import PRESETS, Config, ConfigError, get_config, load_config

__version__ = "0.1.0"
__all__ = ["Config", "ConfigError", "PRESETS", "get_config", "load_config", "__version__"]

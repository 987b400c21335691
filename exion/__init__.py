"""EXION accelerator generator.

Subpackages (each a top-level folder of the repository):

* ``exion.golden`` (``golden/``): NumPy reference models and the cycle model; no Amaranth.
* ``exion.hw`` (``hw/``): Amaranth ``wiring.Component`` hardware blocks.
* ``exion.gen`` (``gen/``): Verilog generation, manifests and the ``exion`` CLI.
* ``exion.sim`` (``sim/``): cocotb benches and the Verilator runner layer.
"""

from .config import PRESETS, Config, ConfigError, get_config, load_config

__version__ = "0.1.0"
__all__ = ["Config", "ConfigError", "PRESETS", "get_config", "load_config", "__version__"]

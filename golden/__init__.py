"""NumPy golden models of EXION (SPEC sections 2, 3 and 3.5). Imports no Amaranth.

Every hardware block in ``exion.hw`` has a golden function of the same name and contract
here; RTL benches compare against these bit-exactly.
"""

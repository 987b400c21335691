"""Formal verification: property harnesses proven with SymbiYosys (``docs/formal.md``).

``props_*`` hold the harnesses (Amaranth ``Assert``/``Assume``/``Cover`` on a design's
ports), ``proofs`` the registry (sizes, modes, depths, mutants) and ``sby`` the runner.
"""

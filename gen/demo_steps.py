"""Demo steps after the DPU; each is ``step(cfg, seed, args, progress) -> dict`` with
``passed``. Blocks add their step here when their RTL lands."""

STEPS: list = []

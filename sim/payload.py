"""Pack and unpack flattened Amaranth payloads for cocotb benches.

The generated Verilog flattens a ``data.Layout`` payload into one vector. Benches never
hand-write bit offsets: they pass the same layout object the hardware uses, and these two
functions walk it (``StructLayout`` -> dict, ``ArrayLayout`` -> list, shapes -> int).
"""

from __future__ import annotations

from amaranth import Shape
from amaranth.lib import data

__all__ = ["pack", "unpack", "width"]


def width(layout) -> int:
    return Shape.cast(layout).width


def pack(layout, value) -> int:
    """Python value (dict / list / int, nested like the layout) -> unsigned integer."""
    if isinstance(layout, data.Layout):
        out = 0
        for key, field in layout:
            try:
                v = value[key]
            except (KeyError, IndexError, TypeError):
                raise ValueError(f"payload value has no field {key!r} of {layout!r}") from None
            out |= pack(field.shape, v) << field.offset
        return out
    shape = Shape.cast(layout)
    v = int(value)
    lo = -(1 << (shape.width - 1)) if shape.signed else 0
    hi = (1 << (shape.width - (1 if shape.signed else 0))) - 1
    if not lo <= v <= hi:
        raise ValueError(f"value {v} does not fit {shape!r}")
    return v & ((1 << shape.width) - 1)


def unpack(layout, raw: int):
    """Unsigned integer -> Python value nested like the layout (signed fields sign-extended)."""
    raw = int(raw)
    if isinstance(layout, data.StructLayout):
        return {key: unpack(f.shape, raw >> f.offset) for key, f in layout}
    if isinstance(layout, data.Layout):
        return [unpack(f.shape, raw >> f.offset) for _, f in layout]
    shape = Shape.cast(layout)
    v = raw & ((1 << shape.width) - 1)
    if shape.signed and v >> (shape.width - 1):
        v -= 1 << shape.width
    return v

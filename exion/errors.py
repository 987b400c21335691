"""Error types the user sees. The CLI prints ``exion: error: <message>`` and exits 2.

Every message names the problem: which config field, which file, which array and shape.
"""


class ExionError(ValueError):
    """Bad input from the user (config, file, array shape or value)."""

"""Chooses between the Cython fast paths and their pure-Python twins (aiohttp's pattern).

One switch, ``RELAY_NO_EXTENSIONS``, is read both by setup.py (skip the build) and here at import
(use the pure-Python twins even when the extension is built). Each public module picks its twin
in one place with :func:`load`; the C twins sit beside their Python twins:

    relay/batch.py (SeriesTablePy) relay/_series_c.pyx + .pxd      (the series table; its C API)
    relay/textparse/_text_py.py   relay/textparse/_text_c.pyx     (the parser)
    relay/remote/encode.py        relay/remote/_encode_c.pyx      (the WriteRequest encoder)
    relay/health/_kernel_py.py    relay/health/_kernel_c.pyx      (the health engine's row gather)
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

NO_EXTENSIONS: bool = os.environ.get("RELAY_NO_EXTENSIONS", "") not in ("", "0")

#: every C twin the package has, by full module name (setup.py builds these, --version lists them)
C_MODULES: tuple[str, ...] = ("relay._series_c", "relay.textparse._text_c", "relay.remote._encode_c",
                              "relay.health._kernel_c")


def load(module: str) -> ModuleType | None:
    """Return the C twin ``module`` (a full name) if extensions are enabled and it is built, else None."""
    if NO_EXTENSIONS:
        return None
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def loaded() -> dict[str, bool]:
    """Which C twins are in use, by module name."""
    return {name: load(name) is not None for name in C_MODULES}

"""Chooses between the Cython fast paths and their pure-Python twins (aiohttp's pattern).

One switch, ``RELAY_NO_EXTENSIONS``, is read both by setup.py (skip the build) and here at import
(use the pure-Python twins even when the extension is built).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

NO_EXTENSIONS: bool = os.environ.get("RELAY_NO_EXTENSIONS", "") not in ("", "0")


def load(name: str) -> ModuleType | None:
    """Return ``relay_ext.<name>`` if extensions are enabled and it is built, else None."""
    if NO_EXTENSIONS:
        return None
    try:
        return importlib.import_module(f"relay_ext.{name}")
    except ImportError:
        return None

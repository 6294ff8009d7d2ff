"""What this relay is: version, git revision, Python, whether the C extensions are in use.

The revision comes, in this order, from the git checkout the package runs from (an editable
install, a source tree: ``git rev-parse HEAD``), from ``relay/_revision`` written by setup.py at
build time (a wheel), else ``unknown``. Read once per process.
"""

from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path

from . import __version__
from ._ext import NO_EXTENSIONS, loaded

__all__ = ["build_info", "c_extensions", "revision", "version_text"]

_PACKAGE = Path(__file__).resolve().parent


def _git_revision() -> str | None:
    if not (_PACKAGE.parent / ".git").exists():  # only the checkout the package itself sits in
        return None
    try:
        out = subprocess.run(["git", "-C", str(_PACKAGE.parent), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    rev = out.stdout.strip()
    return rev if out.returncode == 0 and len(rev) >= 7 and all(c in "0123456789abcdef" for c in rev) else None


@functools.cache
def revision() -> str:
    rev = _git_revision()
    if rev:
        return rev
    try:
        embedded = (_PACKAGE / "_revision").read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        embedded = ""
    return embedded or "unknown"


def c_extensions() -> bool:
    """True when every C twin is in use (built and not switched off by RELAY_NO_EXTENSIONS)."""
    return all(loaded().values())


def build_info() -> dict[str, str]:
    """The labels of ``relay_build_info`` (all strings)."""
    return {
        "version": __version__,
        "revision": revision(),
        "python_version": platform.python_version(),
        "c_extensions": "true" if c_extensions() else "false",
    }


def version_text() -> str:
    """What ``relay --version`` prints (as ``prometheus --version``: the first line, then details)."""
    mods = loaded()
    on = [m for m, ok in mods.items() if ok]
    ext = "on" if len(on) == len(mods) else ("off" if not on else "partly on")
    if NO_EXTENSIONS:
        detail = "off (RELAY_NO_EXTENSIONS is set: the pure-Python twins run)"
    else:
        detail = f"{ext} ({len(on)} of {len(mods)} C twins loaded" + (
            "; not built: " + ", ".join(m for m, ok in mods.items() if not ok) + ")" if len(on) < len(mods) else ")")
    return (
        f"relay, version {__version__} (revision: {revision()})\n"
        f"  python version: {platform.python_version()} ({platform.python_implementation()})\n"
        f"  platform:       {platform.system().lower()}/{platform.machine()}\n"
        f"  c extensions:   {detail}\n"
    )

"""Builds only the Cython extensions (the ``*_c.pyx`` twins inside relay/); everything else is in pyproject.toml.

Set RELAY_NO_EXTENSIONS=1 to skip the build (the package then runs its pure-Python twins).
A failed compile is reported and skipped, so an install without a compiler still works (the relay
then warns at every start). RELAY_REQUIRE_EXTENSIONS=1 makes a failed compile fail the build:
release wheels (cibuildwheel, the container image) must never ship without the C twins.
"""

from __future__ import annotations

import glob
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

NO_EXTENSIONS = os.environ.get("RELAY_NO_EXTENSIONS", "") not in ("", "0")
REQUIRE_EXTENSIONS = os.environ.get("RELAY_REQUIRE_EXTENSIONS", "") not in ("", "0")
if NO_EXTENSIONS and REQUIRE_EXTENSIONS:
    sys.exit("error: RELAY_NO_EXTENSIONS and RELAY_REQUIRE_EXTENSIONS are both set")


class OptionalBuildExt(build_ext):
    """Compile each extension if possible; a failure leaves the pure-Python path in place."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any build failure falls back to pure Python
            if REQUIRE_EXTENSIONS:
                raise
            print(f"warning: relay C extensions not built ({exc}); using pure Python", file=sys.stderr)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            if REQUIRE_EXTENSIONS:
                raise
            print(f"warning: extension {ext.name} not built ({exc}); using pure Python", file=sys.stderr)


def extensions() -> list[Extension]:
    if NO_EXTENSIONS:
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        if REQUIRE_EXTENSIONS:
            raise
        print("warning: Cython not available; using pure Python", file=sys.stderr)
        return []
    exts = [
        Extension(
            os.path.splitext(path)[0].replace(os.sep, "."),
            [path],
            extra_compile_args=["-O3"],
        )
        for path in sorted(glob.glob("relay/**/*.pyx", recursive=True))
    ]
    try:
        return list(
            cythonize(
                exts,
                language_level=3,
                compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
            )
        )
    except Exception as exc:  # a .pyx Cython cannot translate: as a failed compile
        if REQUIRE_EXTENSIONS:
            raise
        print(f"warning: relay C extensions not translated ({exc}); using pure Python", file=sys.stderr)
        return []


def embed_revision() -> None:
    """Write the git revision to relay/_revision, so that a wheel's ``relay --version`` and
    relay_build_info say which commit it was built from (relay.buildinfo reads it)."""
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return
    if out.returncode == 0 and out.stdout.strip():
        with open(os.path.join("relay", "_revision"), "w", encoding="ascii") as f:
            f.write(out.stdout.strip() + "\n")


embed_revision()
setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})

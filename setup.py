"""Declares the optional C extension; all other metadata lives in pyproject.toml.

A failed compile (no compiler, missing Python headers) prints a warning and leaves a working
pure-Python install: ustack.wire.checksum then uses its fallback.
"""

import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, ExecError, PlatformError


class OptionalBuildExt(build_ext):
    def build_extensions(self) -> None:
        if self.compiler.compiler_type == "unix":
            for ext in self.extensions:
                ext.extra_compile_args = ["-O3", *ext.extra_compile_args]
        super().build_extensions()

    def run(self) -> None:
        try:
            super().run()
        except (CCompilerError, ExecError, PlatformError, OSError) as exc:
            self._warn(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except (CCompilerError, ExecError, PlatformError, OSError) as exc:
            self._warn(exc)

    @staticmethod
    def _warn(exc: Exception) -> None:
        print(
            f"WARNING: ustack's C checksum extension was not built ({exc}); "
            "the pure-Python fallback will be used.",
            file=sys.stderr,
        )


setup(
    ext_modules=[Extension("ustack.wire._checksum", ["ustack/wire/_checksum.c"], optional=True)],
    cmdclass={"build_ext": OptionalBuildExt},
    # The C source is in the sdist for building; installs need only the compiled module.
    exclude_package_data={"ustack.wire": ["*.c"]},
)

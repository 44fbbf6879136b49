"""The optional compiled codec; everything else about the package is in pyproject.toml.

``optional=True`` makes a failed compilation (no C compiler, no Python headers) a warning:
the pure-Python package is installed and used instead.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("trio_pb._speedups", ["trio_pb/_speedups.c"], optional=True)])

"""Sphinx configuration for the trio_pb documentation."""

from __future__ import annotations

project = "trio_pb"
author = "the trio_pb developers"
copyright = "2026, the trio_pb developers"

# No intersphinx: the docs must build offline (CI and developer machines have no web access).
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
nitpicky = False
html_theme = "alabaster"
exclude_patterns = ["_build"]

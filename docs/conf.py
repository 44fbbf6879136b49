"""Sphinx configuration for the trio_pb documentation."""

from __future__ import annotations

from typing import Any

project = "trio_pb"
author = "the trio_pb developers"
copyright = "2026, the trio_pb developers"

# No intersphinx: the docs must build offline (CI and developer machines have no web access).
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
nitpicky = False
# furo: a content column that fits code blocks (they scroll inside themselves, not the page),
# and a narrow-screen layout.  docs/_static/trio_pb.css lets the wide tables wrap.
html_theme = "furo"
html_static_path = ["_static"]
html_css_files = ["trio_pb.css"]
html_title = "trio_pb"
exclude_patterns = ["_build"]


def _no_return_type_for_exceptions(app: Any, domain: str, objtype: str, contentnode: Any) -> None:
    """Drop the "Return type: None" that autodoc takes from an exception's ``__init__``.

    Sphinx leaves out the ``__init__`` return type for classes, but not for
    exceptions; this runs just before its own handler and removes it.
    """
    if domain != "py" or objtype != "exception":
        return
    signature = contentnode.parent[0]
    fullname = ".".join(filter(None, (signature.get("module"), signature.get("fullname"))))
    document = getattr(app.env, "current_document", None)
    annotations = (
        document.autodoc_annotations if document is not None else app.env.temp_data.get("annotations", {})
    )
    annotations.get(fullname, {}).pop("return", None)


def setup(app: Any) -> None:
    app.connect("object-description-transform", _no_return_type_for_exceptions, priority=499)

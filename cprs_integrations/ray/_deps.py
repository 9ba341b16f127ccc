"""One error for a missing ``ray`` extra, naming what to install."""

from __future__ import annotations

#: How to install what this subpackage needs.
INSTALL_HINT = 'pip install "cprs-integrations[ray]"'


def missing(error: ImportError, needed: str = "ray[data,serve]") -> ImportError:
    """The ``ImportError`` to raise (``from error``) when ``needed`` cannot be imported."""
    return ImportError(f"cprs_integrations.ray needs {needed} ({error.name or error} is missing): {INSTALL_HINT}")

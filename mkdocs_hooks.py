"""MkDocs hooks of the API reference site (mkdocs.yml's ``hooks``).

The docstrings cross-reference in Sphinx's roles (``:func:`torchnce.nce_loss```, ``:class:``,
``:meth:``, ``~`` for the last name only), which mkdocstrings' Google-style rendering leaves
as text: ``:func:`` before the code. :func:`on_page_content` renders each as the code alone,
as Sphinx shows it.
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|attr|mod|data|exc|obj|const|math):"
                   r"<code>(~?)([^<]*)</code>")


def _code(match: re.Match[str]) -> str:
    tilde, target = match[1], match[2]
    return f"<code>{target.rsplit('.', 1)[-1] if tilde else target}</code>"


def strip_roles(html: str) -> str:
    """``html`` with every Sphinx role before a code span removed (``~a.b`` shows ``b``)."""
    return _ROLE.sub(_code, html)


def on_page_content(html: str, **kwargs: Any) -> str:
    """MkDocs' hook: the page's HTML without the roles' text."""
    del kwargs
    return strip_roles(html)

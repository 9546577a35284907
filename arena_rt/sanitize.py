"""User text policy: plain text only, stored without markup.

nh3 (ammonia) strips every tag and drops the contents of script/style; its output is
HTML-escaped, which we undo so agents read natural text ("a < b", "R&D"). Stored text is
therefore plain text, and every client must render it as text, never as HTML.
"""

from __future__ import annotations

import html
import unicodedata

import nh3

_DROP_CONTENT = {"script", "style", "iframe", "object", "embed", "noscript", "template"}


def clean_text(raw: str) -> str:
    stripped = nh3.clean(raw, tags=set(), clean_content_tags=_DROP_CONTENT, strip_comments=True)
    text = html.unescape(stripped)
    # NUL and other C0 controls (except tab/newline) break terminals and some databases.
    return "".join(ch for ch in text if ch in "\t\n" or unicodedata.category(ch) != "Cc").strip()

"""User text policy: plain text only, stored without markup.

nh3 (ammonia) strips every tag and drops the contents of script/style; its output is
HTML-escaped, which we undo so agents read natural text ("a < b", "R&D"). Stored text is
therefore plain text, and every client must render it as text, never as HTML.
"""

from __future__ import annotations

import html
import re

import nh3

_DROP_CONTENT = {"script", "style", "iframe", "object", "embed", "noscript", "template"}
# Unicode's control characters (category Cc: C0, DEL, C1) but tab and newline. One regex pass:
# a per-character category lookup cost more than nh3 itself on a full-length turn.
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean_text(raw: str) -> str:
    stripped = nh3.clean(raw, tags=set(), clean_content_tags=_DROP_CONTENT, strip_comments=True)
    text = html.unescape(stripped)
    # NUL and other C0 controls (except tab/newline) break terminals and some databases.
    return _CONTROLS.sub("", text).strip()

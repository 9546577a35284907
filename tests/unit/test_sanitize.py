"""Turn text is stored plain: no markup, no control characters but tab and newline."""

from __future__ import annotations

import html
import unicodedata

import nh3
from hypothesis import given
from hypothesis import strategies as st

from arena_rt.sanitize import _DROP_CONTENT as _DROP
from arena_rt.sanitize import clean_text


def _is_control(ch: str) -> bool:
    return ch not in "\t\n" and unicodedata.category(ch) == "Cc"


def _by_category(raw: str) -> str:
    """The rule spelled out by Unicode category, a character at a time."""
    text = html.unescape(nh3.clean(raw, tags=set(), clean_content_tags=_DROP, strip_comments=True))
    return "".join(ch for ch in text if not _is_control(ch)).strip()


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=200))
def test_no_control_character_survives_and_no_other_character_is_lost(raw: str) -> None:
    cleaned = clean_text(raw)
    assert not any(_is_control(ch) for ch in cleaned)
    assert cleaned == _by_category(raw)


def test_markup_is_stripped_and_entities_read_naturally() -> None:
    raw = "a\x00b\tc\x85d <script>alert(1)</script><b>bold</b> R&amp;D, a < b"
    assert clean_text(raw) == "ab\tcd bold R&D, a < b"

"""Ids and room codes: the shapes clients and the database rely on, and no repeats."""

from __future__ import annotations

import re

from arena_rt.ids import ID_LENGTH, ROOM_CODE_LENGTH, new_id, new_room_code


def test_ids_are_cuid2_shaped_and_unique() -> None:
    ids = [new_id() for _ in range(50_000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(rf"[a-z][0-9a-z]{{{ID_LENGTH - 1}}}", i) for i in ids)


def test_ids_use_the_whole_alphabet() -> None:
    # A biased or truncated encoding would leave characters (or leading letters) unused.
    ids = [new_id() for _ in range(5_000)]
    assert {i[0] for i in ids} == set("abcdefghijklmnopqrstuvwxyz")
    assert set("".join(i[1:] for i in ids)) == set("0123456789abcdefghijklmnopqrstuvwxyz")


def test_room_codes_avoid_ambiguous_characters() -> None:
    codes = {new_room_code() for _ in range(5_000)}
    assert len(codes) > 4_990
    assert all(len(c) == ROOM_CODE_LENGTH and not set(c) & set("01OIL") for c in codes)

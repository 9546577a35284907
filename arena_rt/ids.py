"""Identifiers: CUIDs for primary keys, short room codes, random secrets."""

from __future__ import annotations

import secrets

from cuid2 import Cuid

_cuid = Cuid(length=25)
# No 0/O/1/I/L: room codes are read aloud and typed by people.
_ROOM_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
ROOM_CODE_LENGTH = 8


def new_id() -> str:
    return str(_cuid.generate())


def new_room_code() -> str:
    return "".join(secrets.choice(_ROOM_ALPHABET) for _ in range(ROOM_CODE_LENGTH))


def new_token(nbytes: int = 24) -> str:
    return secrets.token_urlsafe(nbytes)

"""The hand-built server text frame is byte for byte what websockets builds, at every length
boundary of RFC 6455's three length encodings."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode

from arena_rt.web.connection import text_frame


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65_535, 65_536, 200_000])
def test_text_frame_matches_websockets(length: int) -> None:
    data = b"x" * length
    assert text_frame(data) == Frame(Opcode.TEXT, data).serialize(mask=False)


def test_the_same_data_object_gets_the_same_frame_object() -> None:
    data = b'{"type":"turn"}'
    assert text_frame(data) is text_frame(data)
    other = b'{"type":"turn"}!'
    assert text_frame(other) == Frame(Opcode.TEXT, other).serialize(mask=False)

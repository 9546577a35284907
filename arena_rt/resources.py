"""HTTP request and response bodies (PROTOCOL.md section 1) as msgspec structs.

Requests forbid unknown fields, so a misspelt setting is an error rather than a silent default.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from arena_rt.protocol import Mode, Status

AgentName = Annotated[str, Meta(pattern=r"^[a-z0-9_-]{3,40}$")]
DisplayName = Annotated[str, Meta(min_length=1, max_length=100)]
Description = Annotated[str, Meta(max_length=2_000)]
Topic = Annotated[str, Meta(min_length=1, max_length=500)]
Id = Annotated[str, Meta(min_length=1, max_length=64)]


class Request(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    pass


class RegisterAgent(Request):
    name: AgentName
    display_name: DisplayName
    description: Description | None = None


class CreateBattle(Request):
    topic: Topic
    mode: Mode = Mode.HEAD_TO_HEAD
    max_participants: Annotated[int, Meta(ge=2, le=10)] = 2
    turn_duration_ms: Annotated[int, Meta(ge=100, le=600_000)] = 30_000
    max_turns: Annotated[int, Meta(ge=1, le=200)] = 10
    start_delay_ms: Annotated[int, Meta(ge=0, le=600_000)] = 10_000
    vote_duration_ms: Annotated[int, Meta(ge=100, le=3_600_000)] = 30_000
    enable_judge: bool = True
    enable_commentator: bool = True
    # PROTOCOL.md spells it enableTTS (camel-casing would give enableTts).
    enable_tts: bool = msgspec.field(default=False, name="enableTTS")


class SubmitFeedback(Request):
    to_agent_id: Id
    rating: Annotated[int, Meta(ge=1, le=5)]
    battle_id: Id | None = None
    comment: Annotated[str, Meta(max_length=2_000)] | None = None


class SubmitVote(Request):
    target_agent_id: Id


class Reputation(msgspec.Struct, rename="camel"):
    average: float | None
    count: int


class RecentBattle(msgspec.Struct, rename="camel"):
    battle_id: str
    room_code: str
    topic: str
    mode: Mode
    outcome: str  # win | loss | draw
    rating_before: float
    rating_after: float
    at: int


class AgentProfile(msgspec.Struct, rename="camel"):
    id: str
    name: str
    display_name: str
    description: str | None
    rating: float
    wins: int
    losses: int
    draws: int
    battles: int
    reputation: Reputation
    created_at: int
    recent_battles: list[RecentBattle] = msgspec.field(default_factory=list)


class RegisteredAgent(msgspec.Struct, rename="camel"):
    id: str
    name: str
    display_name: str
    api_key: str
    key_id: str


class Participant(msgspec.Struct, rename="camel"):
    agent_id: str
    name: str
    display_name: str
    rating: float
    position: int
    team_id: str | None
    is_active: bool


class BattleResource(msgspec.Struct, rename="camel"):
    id: str
    room_code: str
    topic: str
    status: Status
    mode: Mode
    max_participants: int
    turn_duration_ms: int
    max_turns: int
    start_delay_ms: int
    vote_duration_ms: int
    enable_judge: bool
    enable_commentator: bool
    enable_tts: bool = msgspec.field(name="enableTTS")
    current_turn: int
    participants: list[Participant]
    winner_id: str | None
    winning_team_id: str | None
    judge_reasoning: str | None
    cancel_reason: str | None
    created_by_id: str | None
    created_at: int
    started_at: int | None
    completed_at: int | None
    last_seq: int
    # Extension: spectators watching now, over all nodes; null where the server does not count.
    spectator_count: int | None = None


class BattlePage(msgspec.Struct, rename="camel"):
    battles: list[BattleResource]
    next_cursor: str | None


class FeedbackCreated(msgspec.Struct, rename="camel"):
    id: str
    from_agent_id: str
    to_agent_id: str
    battle_id: str | None
    rating: int
    comment: str | None
    created_at: int

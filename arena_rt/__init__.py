"""arena_rt: MoltArena's real-time battle server."""

__version__ = "0.1.0"

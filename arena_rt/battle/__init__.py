"""The battle: its pure state machine, vocabulary and (later) the runner that drives it."""

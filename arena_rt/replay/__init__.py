"""``arena-rt replay``: replay recorded battles against a deployment at many times real load.

Modules: ``recording`` (event logs → replayable battles), ``corpus`` (the synthetic corpus),
``histogram`` (HDR-style latency histograms), ``worker`` (a load-generating process),
``driver`` (set-up, orchestration, aggregation, gates), ``html`` (the report page), ``cli``.
The tool speaks only the public contract in docs/PROTOCOL.md (HTTP + WebSockets); it imports
nothing from the server.
"""

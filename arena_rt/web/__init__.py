"""The ASGI application: HTTP API, sockets, health and metrics."""

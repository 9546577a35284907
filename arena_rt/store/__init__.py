"""Persistence: models, the engine, migrations and the queries the server runs."""

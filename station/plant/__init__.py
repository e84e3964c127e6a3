"""The plant tier: many stations, one view, central storage (docs/plant.md).

Station side: :mod:`station.plant.uplink` (the SQLite outbox to NATS JetStream and S3).
Plant side: :mod:`station.plant.ingest` (JetStream to PostgreSQL), the ``plant`` CLI
(:mod:`station.plant.cli`). :mod:`station.plant.engines` starts NATS, PostgreSQL and
SeaweedFS locally for the demo and the tests. Imported only when a station configures
``plant:`` or runs a ``plant`` command: the station runs as before without it.
"""

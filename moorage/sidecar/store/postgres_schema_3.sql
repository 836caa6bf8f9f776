-- Moorage PostgreSQL schema, version 3: entities_locked_by runs each time an orchestration finishes; without this
-- index it scanned every entity of the hub. Partial: only entities inside a critical section are indexed.
CREATE INDEX IF NOT EXISTS entities_locked ON entities (hub, locked_by_instance) WHERE locked_by_instance IS NOT NULL;

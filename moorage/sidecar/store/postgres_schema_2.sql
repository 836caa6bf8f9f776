-- Moorage PostgreSQL schema, version 2: the W3C trace context (serialized) an orchestration was started with and
-- the one an activity was scheduled from, so traces stay joined across replicas and restarts. Opaque to the store.
ALTER TABLE instances ADD COLUMN IF NOT EXISTS trace_context BYTEA;
ALTER TABLE activities ADD COLUMN IF NOT EXISTS trace_context BYTEA;

-- Moorage PostgreSQL schema, version 1. Every table is keyed by task hub. Keys use the "C" collation so that
-- paging orders ids bytewise, as the SQLite store does. Applied by moorage.sidecar.store.postgres_migrations.
CREATE TABLE instances (
  hub TEXT COLLATE "C" NOT NULL,
  instance_id TEXT COLLATE "C" NOT NULL,
  name TEXT NOT NULL,
  version TEXT,
  execution_id TEXT NOT NULL DEFAULT '',
  status INTEGER NOT NULL,
  input TEXT,
  output TEXT,
  custom_status TEXT,
  failure BYTEA,
  created_at DOUBLE PRECISION NOT NULL,
  last_updated_at DOUBLE PRECISION NOT NULL,
  completed_at DOUBLE PRECISION,
  scheduled_start_at DOUBLE PRECISION,
  tags JSONB,
  parent_instance_id TEXT COLLATE "C",
  parent_task_id INTEGER,
  lease_token TEXT,
  lease_owner TEXT,
  lease_until DOUBLE PRECISION,
  leased_inbox BIGINT[],
  lease_started_at DOUBLE PRECISION,
  PRIMARY KEY (hub, instance_id)
);
CREATE INDEX instances_created ON instances (hub, created_at, instance_id);
CREATE INDEX instances_completed ON instances (hub, completed_at, instance_id);
CREATE INDEX instances_parent ON instances (hub, parent_instance_id);
CREATE INDEX instances_lease ON instances (lease_token);
CREATE INDEX instances_lease_owner ON instances (hub, lease_owner) WHERE lease_owner IS NOT NULL;

CREATE TABLE history (
  id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  hub TEXT COLLATE "C" NOT NULL,
  instance_id TEXT COLLATE "C" NOT NULL,
  event BYTEA NOT NULL
);
CREATE INDEX history_instance ON history (hub, instance_id, id);

CREATE TABLE inbox (
  id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  hub TEXT COLLATE "C" NOT NULL,
  instance_id TEXT COLLATE "C" NOT NULL,
  visible_at DOUBLE PRECISION NOT NULL,
  event BYTEA NOT NULL
);
CREATE INDEX inbox_instance ON inbox (hub, instance_id, id);
CREATE INDEX inbox_visible ON inbox (hub, visible_at);

CREATE TABLE activities (
  id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  hub TEXT COLLATE "C" NOT NULL,
  instance_id TEXT COLLATE "C" NOT NULL,
  execution_id TEXT NOT NULL,
  name TEXT NOT NULL,
  version TEXT,
  task_id INTEGER NOT NULL,
  input TEXT,
  tags JSONB,
  lease_token TEXT,
  lease_owner TEXT,
  lease_until DOUBLE PRECISION
);
CREATE INDEX activities_hub ON activities (hub, lease_until, id);
CREATE INDEX activities_instance ON activities (hub, instance_id);
CREATE INDEX activities_lease ON activities (lease_token);
CREATE INDEX activities_lease_owner ON activities (hub, lease_owner) WHERE lease_owner IS NOT NULL;

CREATE TABLE entities (
  hub TEXT COLLATE "C" NOT NULL,
  entity_id TEXT COLLATE "C" NOT NULL,
  state TEXT,
  last_modified_at DOUBLE PRECISION NOT NULL,
  locked_by TEXT,
  locked_by_instance TEXT COLLATE "C",
  lease_token TEXT,
  lease_owner TEXT,
  lease_until DOUBLE PRECISION,
  leased_inbox BIGINT[],
  PRIMARY KEY (hub, entity_id)
);
CREATE INDEX entities_lease ON entities (lease_token);
CREATE INDEX entities_lease_owner ON entities (hub, lease_owner) WHERE lease_owner IS NOT NULL;

CREATE TABLE entity_inbox (
  id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  hub TEXT COLLATE "C" NOT NULL,
  entity_id TEXT COLLATE "C" NOT NULL,
  visible_at DOUBLE PRECISION NOT NULL,
  event BYTEA NOT NULL
);
CREATE INDEX entity_inbox_entity ON entity_inbox (hub, entity_id, id);
CREATE INDEX entity_inbox_visible ON entity_inbox (hub, visible_at);

CREATE TABLE lock_requests (
  id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  hub TEXT COLLATE "C" NOT NULL,
  critical_section_id TEXT NOT NULL,
  parent_instance_id TEXT COLLATE "C" NOT NULL,
  lock_set TEXT[] NOT NULL
);
CREATE INDEX lock_requests_hub ON lock_requests (hub, id);

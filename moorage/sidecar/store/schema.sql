-- Moorage SQLite schema. Every table is keyed by task hub.
CREATE TABLE IF NOT EXISTS instances (
  hub TEXT NOT NULL,
  instance_id TEXT NOT NULL,
  name TEXT NOT NULL,
  version TEXT,
  execution_id TEXT NOT NULL DEFAULT '',
  status INTEGER NOT NULL,
  input TEXT,
  output TEXT,
  custom_status TEXT,
  failure BLOB,
  created_at REAL NOT NULL,
  last_updated_at REAL NOT NULL,
  completed_at REAL,
  scheduled_start_at REAL,
  tags TEXT,
  parent_instance_id TEXT,
  parent_task_id INTEGER,
  lease_token TEXT,
  lease_owner TEXT,
  lease_until REAL,
  leased_inbox TEXT,
  lease_started_at REAL,
  trace_context BLOB,
  PRIMARY KEY (hub, instance_id)
);
CREATE INDEX IF NOT EXISTS instances_created ON instances (hub, created_at, instance_id);
CREATE INDEX IF NOT EXISTS instances_completed ON instances (hub, completed_at, instance_id);
CREATE INDEX IF NOT EXISTS instances_parent ON instances (hub, parent_instance_id);
CREATE INDEX IF NOT EXISTS instances_lease ON instances (lease_token);
-- renew_leases looks instances up by owner: without this it reads every instance, finished ones included
CREATE INDEX IF NOT EXISTS instances_owner ON instances (hub, lease_owner) WHERE lease_owner IS NOT NULL;

CREATE TABLE IF NOT EXISTS history (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  hub TEXT NOT NULL,
  instance_id TEXT NOT NULL,
  event BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS history_instance ON history (hub, instance_id, id);

CREATE TABLE IF NOT EXISTS inbox (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  hub TEXT NOT NULL,
  instance_id TEXT NOT NULL,
  visible_at REAL NOT NULL,
  event BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS inbox_instance ON inbox (hub, instance_id, id);
CREATE INDEX IF NOT EXISTS inbox_visible ON inbox (hub, visible_at);

CREATE TABLE IF NOT EXISTS activities (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  hub TEXT NOT NULL,
  instance_id TEXT NOT NULL,
  execution_id TEXT NOT NULL,
  name TEXT NOT NULL,
  version TEXT,
  task_id INTEGER NOT NULL,
  input TEXT,
  tags TEXT,
  lease_token TEXT,
  lease_owner TEXT,
  lease_until REAL,
  trace_context BLOB
);
CREATE INDEX IF NOT EXISTS activities_hub ON activities (hub, lease_until, id);
CREATE INDEX IF NOT EXISTS activities_instance ON activities (hub, instance_id);
CREATE INDEX IF NOT EXISTS activities_lease ON activities (lease_token);
CREATE INDEX IF NOT EXISTS activities_owner ON activities (hub, lease_owner) WHERE lease_owner IS NOT NULL;

-- An entity's state has a table of its own: a lease, a renewal, a release or a lock changes the size of the
-- entities row, and SQLite rewrites a row that changes size whole, overflow pages included (a 600 KiB agent
-- session was written twice per batch only to take and give back its lease).
CREATE TABLE IF NOT EXISTS entities (
  hub TEXT NOT NULL,
  entity_id TEXT NOT NULL,
  last_modified_at REAL NOT NULL,
  locked_by TEXT,
  locked_by_instance TEXT,
  lease_token TEXT,
  lease_owner TEXT,
  lease_until REAL,
  leased_inbox TEXT,
  PRIMARY KEY (hub, entity_id)
);
CREATE INDEX IF NOT EXISTS entities_lease ON entities (lease_token);
CREATE INDEX IF NOT EXISTS entities_owner ON entities (hub, lease_owner) WHERE lease_owner IS NOT NULL;
-- entities_locked_by runs each time an orchestration finishes
CREATE INDEX IF NOT EXISTS entities_locked ON entities (hub, locked_by_instance) WHERE locked_by_instance IS NOT NULL;

CREATE TABLE IF NOT EXISTS entity_states (
  hub TEXT NOT NULL,
  entity_id TEXT NOT NULL,
  state TEXT NOT NULL,
  PRIMARY KEY (hub, entity_id)
);

CREATE TABLE IF NOT EXISTS entity_inbox (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  hub TEXT NOT NULL,
  entity_id TEXT NOT NULL,
  visible_at REAL NOT NULL,
  event BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS entity_inbox_entity ON entity_inbox (hub, entity_id, id);
CREATE INDEX IF NOT EXISTS entity_inbox_visible ON entity_inbox (hub, visible_at);

CREATE TABLE IF NOT EXISTS lock_requests (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  hub TEXT NOT NULL,
  critical_section_id TEXT NOT NULL,
  parent_instance_id TEXT NOT NULL,
  lock_set TEXT NOT NULL
);

-- Alert state: one row per time a finding opened. While it persists the row stays open (resolved_at
-- NULL) and is re-notified at most every [alerts] renotify_hours; when it clears it is resolved once.
CREATE TABLE alerts (
  id             INTEGER PRIMARY KEY,
  key            TEXT    NOT NULL,   -- the finding's stable key
  kind           TEXT    NOT NULL,
  severity       TEXT    NOT NULL CHECK (severity IN ('critical', 'warning', 'info')),
  domain         TEXT    NOT NULL,
  source_ip      TEXT,
  reporter       TEXT,
  summary        TEXT    NOT NULL,   -- the latest summary
  details        TEXT    NOT NULL,   -- JSON object, the latest numbers
  first_seen     INTEGER NOT NULL,
  last_seen      INTEGER NOT NULL,
  last_notified  INTEGER,            -- when notifications were last queued for it
  resolved_at    INTEGER
);
CREATE UNIQUE INDEX alerts_open_key ON alerts (key) WHERE resolved_at IS NULL;
CREATE INDEX alerts_last_seen ON alerts (last_seen);

-- Every message queued for a channel. Rendered when queued, so a retry on a later run sends the
-- very same text; txn_id makes a retried Matrix send idempotent (client-server API, section on
-- transaction identifiers) and becomes the email Message-ID.
CREATE TABLE notifications (
  id            INTEGER PRIMARY KEY,
  alert_id      INTEGER REFERENCES alerts (id) ON DELETE CASCADE,  -- NULL for digests and tests
  event         TEXT    NOT NULL CHECK (event IN ('opened', 'reminder', 'resolved', 'digest', 'test')),
  channel       TEXT    NOT NULL CHECK (channel IN ('email', 'matrix', 'discord')),
  message       TEXT    NOT NULL,   -- JSON: the rendered message
  txn_id        TEXT    NOT NULL UNIQUE,
  created_at    INTEGER NOT NULL,
  attempts      INTEGER NOT NULL DEFAULT 0,
  last_attempt  INTEGER,
  last_error    TEXT,
  delivered_at  INTEGER
);
CREATE INDEX notifications_pending ON notifications (channel, id) WHERE delivered_at IS NULL;

-- Reverse DNS names of source IPs, looked up once; name NULL when the lookup found none.
CREATE TABLE reverse_dns (
  ip           TEXT    PRIMARY KEY,
  name         TEXT,
  looked_up_at INTEGER NOT NULL
);

-- Delivery that never blocks a channel for good and never posts a message over and over
-- (docs: "Delivery rules").
--
-- A message the receiver refuses for good (SMTP 5xx to its content, HTTP 4xx about its body) is
-- parked with the reason, and the channel moves on; a short notice queued right after it
-- (fallback_for) says that an alert could not be delivered in full. A message whose sends went
-- unanswered (a timeout after the request went out: it may have been posted) counts them, so a
-- channel that cannot tell a repeat from a new message (a Discord webhook, SMTP) sends it at most
-- twice; when that budget is spent it is parked as unconfirmed.
ALTER TABLE notifications ADD COLUMN parked_at INTEGER;
ALTER TABLE notifications ADD COLUMN parked_reason TEXT;
ALTER TABLE notifications ADD COLUMN unanswered INTEGER NOT NULL DEFAULT 0;
ALTER TABLE notifications ADD COLUMN first_unanswered_at INTEGER;
ALTER TABLE notifications ADD COLUMN fallback_for INTEGER REFERENCES notifications (id) ON DELETE CASCADE;

DROP INDEX notifications_pending;
CREATE INDEX notifications_pending ON notifications (channel, id) WHERE delivered_at IS NULL AND parked_at IS NULL;
CREATE INDEX notifications_parked ON notifications (channel, parked_at) WHERE parked_at IS NOT NULL;

-- Per channel, how its deliveries go: failing_since is the first failed run of the current streak
-- (NULL once a message gets through), held says the last failure would meet every message
-- (bad credentials, no permission, unknown room), so the channel waits rather than parking each.
CREATE TABLE notification_channels (
  channel            TEXT    PRIMARY KEY CHECK (channel IN ('email', 'matrix', 'discord')),
  last_delivered_at  INTEGER,
  failing_since      INTEGER,
  held               INTEGER NOT NULL DEFAULT 0,
  last_error         TEXT,
  last_error_at      INTEGER
);

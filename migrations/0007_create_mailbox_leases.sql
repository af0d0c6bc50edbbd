-- Who is reading a mailbox right now. Two processes reading the same mailbox at once (a cron
-- `fetch` beside `ruawatch run`) would both download and move its messages: copies in the
-- processed folder, and messages that vanish under the other reader. One row per mailbox being
-- read, held by one process, renewed while it reads, taken over once stale
-- (src/store/mailboxes.ts).
CREATE TABLE mailbox_leases (
  mailbox      TEXT    PRIMARY KEY,   -- [[mailbox]] name, as in mailbox_state
  holder       TEXT    NOT NULL,      -- a random id of the holding process
  host         TEXT    NOT NULL,      -- its host name (and PID namespace)
  pid          INTEGER NOT NULL,
  command      TEXT    NOT NULL,      -- "fetch" or "run"
  acquired_at  INTEGER NOT NULL,      -- epoch seconds
  expires_at   INTEGER NOT NULL       -- stale after this unless renewed
);

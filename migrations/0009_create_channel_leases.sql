-- Who is delivering a channel's queue of notifications right now. Two processes delivering it at
-- once (a `ruawatch alerts` run by hand beside `ruawatch run`) would both send each pending message:
-- an email twice. One row per channel being delivered, held by one process, renewed after each
-- message, taken over once stale (src/store/leases.ts, pipeline/alerts.ts deliverPending).
CREATE TABLE channel_leases (
  channel      TEXT    PRIMARY KEY,   -- email, matrix or discord
  holder       TEXT    NOT NULL,      -- a random id of the holding process
  host         TEXT    NOT NULL,      -- its host name (and PID namespace)
  pid          INTEGER NOT NULL,
  command      TEXT    NOT NULL,      -- the command delivering ("run", "alerts", "digest", ...)
  acquired_at  INTEGER NOT NULL,      -- epoch seconds
  expires_at   INTEGER NOT NULL       -- stale after this unless renewed
);

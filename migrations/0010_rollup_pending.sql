-- Aggregate reports stored but not yet added to the daily rollups (0004). A report's records are
-- written in its own transaction, with a row here; the rollups of the reports listed here are then
-- added many reports at a time, by one grouped statement per table, in a transaction that also
-- deletes their rows here (src/store/rollups.ts, RollupWriter.settle). So a report is added to the
-- rollups exactly once, whole or not at all, and a duplicate, which stores nothing, adds nothing.
-- Every command that stores reports settles before it ends (and during a long run, every 200,000
-- records or so), and the alert evaluation and retention settle before they read; what is left
-- here after a crash is settled by the next of them. Rolling up 2,000 reports at once writes each
-- rollup page once, where a report at a time wrote the same pages again with every report.
CREATE TABLE rollup_pending (
  report_id          INTEGER PRIMARY KEY REFERENCES reports (id) ON DELETE CASCADE,
  -- What the writer noted of the records as they were parsed (rollups.ts, DmarcRecordTally); NULL
  -- when not noted (then SQLite works it out from the records).
  first_id           INTEGER,  -- id of the report's first record, when its records' ids follow one another
  firsts             BLOB,     -- a byte per record in id order: '1' for the first record of its source IP, else '0'
  multi_signed       INTEGER NOT NULL DEFAULT 1,  -- DKIM signatures past the first of each record (0: none)
  messages           REAL,
  dmarc_pass         REAL,
  dkim_aligned_pass  REAL,
  spf_aligned_pass   REAL,
  forwarded          REAL,
  quarantine         REAL,
  reject             REAL
);

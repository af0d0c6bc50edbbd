-- Daily rollups: what the drift rules, the digest, the dashboard, `report` and /metrics read, so that
-- their cost grows with domains x sources x days and not with records. They are written in the
-- same transaction as the report that feeds them (src/store/rollups.ts), so a duplicate report,
-- which stores nothing, adds nothing to them either. Days are UTC day numbers (epoch seconds /
-- 86,400). A report that spans several days is shared out over them pro rata to the seconds it
-- covers in each, so counts are REAL; a range longer than 31 days is attributed to its last 31
-- days (analyse/rollups.ts, dayShares), so a report with an absurd range costs what a normal one
-- does, and a report of very many records to fewer of its last days, so that it makes at most
-- 2,000,000 rows here (reportShares). A report is *counted* (the `reports` columns) once, on the last day it covers. Records
-- that retention deletes (ruawatch prune) leave their rollups behind: these tables are the
-- history, and cannot be rebuilt for pruned reports.
--
-- When this migration is applied to a database that already holds reports, a step in TypeScript
-- (src/store/rollups.ts, buildRollups, run by migrate.ts) fills these tables from the records.

-- Per day, policy domain, source IP and header_from (lower case, '' when the record had none).
CREATE TABLE dmarc_daily (
  domain             TEXT    NOT NULL,
  day                INTEGER NOT NULL,
  source_ip          TEXT    NOT NULL,
  header_from        TEXT    NOT NULL,
  messages           REAL    NOT NULL DEFAULT 0,
  dmarc_pass         REAL    NOT NULL DEFAULT 0,  -- policy_evaluated DKIM or SPF pass (RFC 7489 section 6.6.2)
  dkim_aligned_pass  REAL    NOT NULL DEFAULT 0,
  spf_aligned_pass   REAL    NOT NULL DEFAULT 0,
  forwarded          REAL    NOT NULL DEFAULT 0,  -- failing DMARC with a forwarded, trusted_forwarder or mailing_list override
  quarantine         REAL    NOT NULL DEFAULT 0,  -- disposition; "none" is messages - quarantine - reject
  reject             REAL    NOT NULL DEFAULT 0,
  reports            INTEGER NOT NULL DEFAULT 0,  -- reports listing the source IP (on the row of its first record)
  reporters          INTEGER NOT NULL DEFAULT 0,  -- bit set of the reporters that listed it (domain_reporters.bit)
  PRIMARY KEY (domain, day, source_ip, header_from)
) WITHOUT ROWID;

-- Per day, policy domain, source IP and DKIM signature (signing domain, selector, result; lower
-- case, '' when missing): messages. Forwarded and mailing-list records are left out: they break
-- signatures by nature, and no rule counts them.
CREATE TABLE dkim_daily (
  domain          TEXT    NOT NULL,
  day             INTEGER NOT NULL,
  source_ip       TEXT    NOT NULL,
  signing_domain  TEXT    NOT NULL,
  selector        TEXT    NOT NULL,
  result          TEXT    NOT NULL,
  messages        REAL    NOT NULL DEFAULT 0,
  PRIMARY KEY (domain, day, source_ip, signing_domain, selector, result)
) WITHOUT ROWID;

-- Per day and policy domain: the DMARC totals (the sum of dmarc_daily) and the TLS sessions (the
-- sum of tls_daily), kept apart so the dashboard and /metrics read one row per domain and day.
CREATE TABLE domain_daily (
  day                INTEGER NOT NULL,
  domain             TEXT    NOT NULL,
  messages           REAL    NOT NULL DEFAULT 0,
  dmarc_pass         REAL    NOT NULL DEFAULT 0,
  dkim_aligned_pass  REAL    NOT NULL DEFAULT 0,
  spf_aligned_pass   REAL    NOT NULL DEFAULT 0,
  forwarded          REAL    NOT NULL DEFAULT 0,
  quarantine         REAL    NOT NULL DEFAULT 0,
  reject             REAL    NOT NULL DEFAULT 0,
  dmarc_reports      INTEGER NOT NULL DEFAULT 0,
  tls_successful     REAL    NOT NULL DEFAULT 0,
  tls_failed         REAL    NOT NULL DEFAULT 0,
  tls_reports        INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (day, domain)
) WITHOUT ROWID;
CREATE INDEX domain_daily_domain ON domain_daily (domain, day);

-- Per day: the same over every domain (the dashboard's all-domains lines).
CREATE TABLE daily_totals (
  day             INTEGER PRIMARY KEY,
  messages        REAL    NOT NULL DEFAULT 0,
  dmarc_pass      REAL    NOT NULL DEFAULT 0,
  dmarc_reports   INTEGER NOT NULL DEFAULT 0,
  tls_successful  REAL    NOT NULL DEFAULT 0,
  tls_failed      REAL    NOT NULL DEFAULT 0,
  tls_reports     INTEGER NOT NULL DEFAULT 0
);

-- Per day, TLS policy domain and MX: sessions (RFC 8460 section 4.4). Failed sessions go to the
-- MX their failure details name (else the policy's only MX, else '*'). Successful sessions are only
-- counted per policy, so they go to the policy's MX when it names exactly one, else to '*'.
CREATE TABLE tls_daily (
  domain      TEXT    NOT NULL,
  day         INTEGER NOT NULL,
  mx          TEXT    NOT NULL,
  successful  REAL    NOT NULL DEFAULT 0,
  failed      REAL    NOT NULL DEFAULT 0,
  PRIMARY KEY (domain, day, mx)
) WITHOUT ROWID;

-- Per day, TLS policy domain, MX, result type and reporter: failed sessions. Failed sessions a
-- report counts without details are result type 'unspecified'.
CREATE TABLE tls_failure_daily (
  domain       TEXT    NOT NULL,
  day          INTEGER NOT NULL,
  mx           TEXT    NOT NULL,
  result_type  TEXT    NOT NULL,
  reporter     TEXT    NOT NULL,
  sessions     REAL    NOT NULL DEFAULT 0,
  PRIMARY KEY (domain, day, mx, result_type, reporter)
) WITHOUT ROWID;

-- Per day, policy domain and the policy reporters saw, with RFC 7489 section 6.3 defaults filled
-- in ("p=reject; sp=reject; pct=100; adkim=r; aspf=r"): the share of reports that saw it.
CREATE TABLE policy_daily (
  domain   TEXT    NOT NULL,
  day      INTEGER NOT NULL,
  policy   TEXT    NOT NULL,
  weight   REAL    NOT NULL DEFAULT 0,
  reports  INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (domain, day, policy)
) WITHOUT ROWID;

-- Coverage: per policy domain, kind, day and reporter, the reports that end that day and how far
-- the latest of them reached (reporter_silent).
CREATE TABLE report_daily (
  domain    TEXT    NOT NULL,
  kind      TEXT    NOT NULL CHECK (kind IN ('dmarc', 'tlsrpt')),
  day       INTEGER NOT NULL,
  reporter  TEXT    NOT NULL,
  reports   INTEGER NOT NULL DEFAULT 0,
  last_end  INTEGER NOT NULL,
  PRIMARY KEY (domain, kind, day, reporter)
) WITHOUT ROWID;

-- Failure reports per day (of the reported message's arrival), reported domain, source IP and DKIM
-- signature ('' when missing). Kept when retention deletes the summaries, which hold addresses.
CREATE TABLE failure_daily (
  domain         TEXT    NOT NULL,
  day            INTEGER NOT NULL,
  source_ip      TEXT    NOT NULL,
  dkim_domain    TEXT    NOT NULL,
  dkim_selector  TEXT    NOT NULL,
  reports        INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (domain, day, source_ip, dkim_domain, dkim_selector)
) WITHOUT ROWID;

-- A bit per reporter of a policy domain, in order of first appearance, for dmarc_daily.reporters:
-- bits 0-61 are one reporter each, 62 is shared by any further ones.
CREATE TABLE domain_reporters (
  domain    TEXT    NOT NULL,
  reporter  TEXT    NOT NULL,
  bit       INTEGER NOT NULL,
  PRIMARY KEY (domain, reporter)
) WITHOUT ROWID;

-- When retention deleted a report's records (or a failure report's summary); NULL while they are kept.
ALTER TABLE reports ADD COLUMN pruned_at INTEGER;
-- The dashboard's latest reports, and retention's oldest ones.
CREATE INDEX reports_begin ON reports (begin_ts);
CREATE INDEX reports_end ON reports (end_ts) WHERE pruned_at IS NULL;

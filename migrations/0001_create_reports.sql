-- Reports of every kind share one table and one natural key; a duplicate can never be stored twice.
CREATE TABLE reports (
  id              INTEGER PRIMARY KEY,
  kind            TEXT    NOT NULL CHECK (kind IN ('dmarc', 'tlsrpt', 'failure')),
  reporter        TEXT    NOT NULL,
  reporter_email  TEXT,
  report_id       TEXT    NOT NULL,
  policy_domain   TEXT    NOT NULL,
  begin_ts        INTEGER NOT NULL,   -- UTC epoch seconds
  end_ts          INTEGER NOT NULL,
  schema_version  TEXT,               -- dmarc: '1.0' (RFC 7489 and the draft) or '2.0' (RFC 9990)
  version_text    TEXT,               -- dmarc: <version> as sent
  generator       TEXT,
  contact_info    TEXT,               -- dmarc extra_contact_info, tlsrpt contact-info
  errors          TEXT,               -- dmarc <error> elements, JSON array
  record_count    INTEGER NOT NULL DEFAULT 0,
  message_count   INTEGER NOT NULL DEFAULT 0,
  raw_sha256      TEXT    NOT NULL,   -- SHA-256 of the report's own bytes (after decompression)
  raw_size        INTEGER NOT NULL,
  input           TEXT    NOT NULL,   -- where it came from: path, path#entry, mailbox:uid
  ingested_at     INTEGER NOT NULL,
  UNIQUE (kind, reporter, report_id, policy_domain, begin_ts, end_ts)
);
CREATE INDEX reports_domain_time ON reports (policy_domain, begin_ts);
CREATE INDEX reports_sha256 ON reports (raw_sha256);

-- RFC 7489 section 7.2 / RFC 9990 section 4: the policy the reporter saw published.
CREATE TABLE dmarc_policies (
  report_id         INTEGER PRIMARY KEY REFERENCES reports (id) ON DELETE CASCADE,
  domain            TEXT NOT NULL,
  adkim             TEXT,
  aspf              TEXT,
  p                 TEXT,
  sp                TEXT,
  np                TEXT,
  pct               INTEGER,
  fo                TEXT,
  testing           TEXT,
  discovery_method  TEXT
);

-- One row per <record>. The record's DKIM and SPF results and its policy override reasons are
-- JSON arrays in the row (query them with json_each): one insert per record instead of four
-- keeps ingest fast, and they are only ever read together with their record.
CREATE TABLE dmarc_records (
  id             INTEGER PRIMARY KEY,
  report_id      INTEGER NOT NULL REFERENCES reports (id) ON DELETE CASCADE,
  source_ip      TEXT    NOT NULL,   -- canonical (IPv6 compressed, lower case)
  count          INTEGER NOT NULL,
  disposition    TEXT,
  dkim_aligned   TEXT,               -- policy_evaluated/dkim
  spf_aligned    TEXT,               -- policy_evaluated/spf
  header_from    TEXT,
  envelope_from  TEXT,
  envelope_to    TEXT,
  reasons        TEXT    NOT NULL DEFAULT '[]',  -- [{"type", "comment"}]
  dkim_results   TEXT    NOT NULL DEFAULT '[]',  -- [{"domain", "selector", "result", "human_result"}]
  spf_results    TEXT    NOT NULL DEFAULT '[]'   -- [{"domain", "scope", "result", "human_result"}]
);
CREATE INDEX dmarc_records_report ON dmarc_records (report_id);
-- No index on source_ip yet: every query so far reaches records through their report, and a
-- random-order index costs ingest time; add one in a migration when a per-IP lookup needs it.

-- RFC 8460 section 4.4: one row per policy in a TLS report.
CREATE TABLE tls_policies (
  id              INTEGER PRIMARY KEY,
  report_id       INTEGER NOT NULL REFERENCES reports (id) ON DELETE CASCADE,
  policy_type     TEXT    NOT NULL,
  policy_domain   TEXT,
  policy_strings  TEXT    NOT NULL,   -- JSON array
  mx_hosts        TEXT    NOT NULL,   -- JSON array
  successful      INTEGER NOT NULL,
  failed          INTEGER NOT NULL
);
CREATE INDEX tls_policies_report ON tls_policies (report_id);

CREATE TABLE tls_failures (
  policy_id               INTEGER NOT NULL REFERENCES tls_policies (id) ON DELETE CASCADE,
  result_type             TEXT    NOT NULL,
  sending_mta_ip          TEXT,
  receiving_mx_hostname   TEXT,
  receiving_mx_helo       TEXT,
  receiving_ip            TEXT,
  failed_sessions         INTEGER NOT NULL,
  additional_information  TEXT,
  failure_reason_code     TEXT
);
CREATE INDEX tls_failures_policy ON tls_failures (policy_id);

-- DMARC failure reports in summary form (no message bodies).
CREATE TABLE failure_reports (
  report_id               INTEGER PRIMARY KEY REFERENCES reports (id) ON DELETE CASCADE,
  format                  TEXT NOT NULL CHECK (format IN ('arf', 'text')),
  feedback_type           TEXT NOT NULL,
  source_ip               TEXT,
  reported_domain         TEXT NOT NULL,
  original_mail_from      TEXT,
  original_rcpt_to        TEXT,
  header_from             TEXT,
  auth_failure            TEXT,
  delivery_result         TEXT,
  dkim_domain             TEXT,
  dkim_selector           TEXT,
  spf_dns                 TEXT,
  identity_alignment      TEXT,
  authentication_results  TEXT
);

-- Inputs that could not be stored (failed) or held no report (skipped), with the reason.
CREATE TABLE ingest_failures (
  id          INTEGER PRIMARY KEY,
  input       TEXT    NOT NULL,
  outcome     TEXT    NOT NULL CHECK (outcome IN ('failed', 'skipped')),
  error_code  TEXT    NOT NULL,
  message     TEXT    NOT NULL,
  sha256      TEXT,
  size        INTEGER,
  created_at  INTEGER NOT NULL
);
CREATE INDEX ingest_failures_sha256 ON ingest_failures (sha256);

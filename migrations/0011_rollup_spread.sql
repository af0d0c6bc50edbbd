-- What a queued aggregate report may spread over days (analyse/rollups.ts reportShares `spread`):
-- NULL for REPORT_SPREAD_ROWS, less when the earlier reports of its input (a mail, a file) used up
-- INPUT_SPREAD_ROWS between them. Noted when the report is stored, since the settle that shares it
-- out does not know which input it came from.
ALTER TABLE rollup_pending ADD COLUMN spread_rows INTEGER;

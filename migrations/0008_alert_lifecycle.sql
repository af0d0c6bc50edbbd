-- The life of an alert (docs/findings.md): an alert is judged against the state before it began,
-- and sent again only when it got worse.
--
-- baseline: the finding's numbers when the alert opened (JSON, its details then). The rules judge
-- an open alert against them, so the failing days moving into the baseline window neither resolve
-- it nor hide it.
-- notified: what the last message said (JSON: severity, failing volume per day, failing sources),
-- so a reminder goes out only when the severity rose, the volume doubled or more sources joined.
ALTER TABLE alerts ADD COLUMN baseline TEXT;
ALTER TABLE alerts ADD COLUMN notified TEXT;

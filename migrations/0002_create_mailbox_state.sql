-- Where each configured mailbox was read up to (RFC 3501 section 2.3.1.1: UIDs are only
-- meaningful together with the folder's UIDVALIDITY).
CREATE TABLE mailbox_state (
  mailbox      TEXT    PRIMARY KEY,   -- [[mailbox]] name
  folder       TEXT    NOT NULL,
  uidvalidity  INTEGER NOT NULL,
  last_uid     INTEGER NOT NULL,      -- every message up to this UID has been acknowledged
  updated_at   INTEGER NOT NULL
);

-- Every message handled, so a message above last_uid that was already acknowledged (when an
-- earlier one is waiting to be retried) is not processed twice.
CREATE TABLE mailbox_messages (
  mailbox      TEXT    NOT NULL,
  uidvalidity  INTEGER NOT NULL,
  uid          INTEGER NOT NULL,
  outcome      TEXT    NOT NULL CHECK (outcome IN ('processed', 'invalid')),
  reason       TEXT,                  -- why a message went to the invalid folder
  handled_at   INTEGER NOT NULL,
  PRIMARY KEY (mailbox, uidvalidity, uid)
);

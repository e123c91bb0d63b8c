-- Reconciliation of provider settlement files against the ledger.
--
-- A run is one settlement file of one provider for one date, keyed by the file's SHA-256: the same
-- file again is the same run; a different file for the same provider and date supersedes the
-- active run (history is kept). Everything a run writes commits in one transaction.
CREATE TABLE reconciliation_runs (
    id              TEXT PRIMARY KEY,
    provider        TEXT NOT NULL,
    settlement_date TEXT NOT NULL,
    file_sha256     TEXT NOT NULL,
    file_bytes      BIGINT NOT NULL,
    format          TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('active', 'superseded')),
    supersedes      TEXT REFERENCES reconciliation_runs (id),
    superseded_by   TEXT REFERENCES reconciliation_runs (id),
    rows_total      BIGINT NOT NULL,
    rows_invalid    BIGINT NOT NULL,
    rows_matched    BIGINT NOT NULL,
    rows_settled    BIGINT NOT NULL,
    settled_gross   BIGINT NOT NULL,
    settled_refunds BIGINT NOT NULL,
    settled_fees    BIGINT NOT NULL,
    settlement_tx   TEXT REFERENCES ledger_transactions (id),
    created_by      TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    UNIQUE (provider, settlement_date, file_sha256)
);
-- At most one active run per provider and date.
CREATE UNIQUE INDEX reconciliation_runs_active ON reconciliation_runs (provider, settlement_date)
    WHERE status = 'active';

-- Rows that could not be read, with their line number and why.
CREATE TABLE settlement_row_errors (
    run_id  TEXT NOT NULL REFERENCES reconciliation_runs (id),
    line_no BIGINT NOT NULL,
    reason  TEXT NOT NULL,
    raw     TEXT NOT NULL,
    PRIMARY KEY (run_id, line_no)
);

-- Which gateway record a file row is: each file row at most once (primary key), each payment or
-- refund at most once among active runs (partial unique index).
CREATE TABLE reconciliation_matches (
    run_id      TEXT NOT NULL REFERENCES reconciliation_runs (id),
    line_no     BIGINT NOT NULL,
    target_kind TEXT NOT NULL CHECK (target_kind IN ('payment', 'refund')),
    target_id   TEXT NOT NULL,
    matched_by  TEXT NOT NULL CHECK (matched_by IN ('provider_txn_id', 'merchant_ref', 'amount_window')),
    amount      BIGINT NOT NULL,
    fee         BIGINT NOT NULL,
    -- The row's money was settled (by the run, or later by a resolution).
    settled     BOOLEAN NOT NULL,
    active      BOOLEAN NOT NULL,
    PRIMARY KEY (run_id, line_no)
);
CREATE UNIQUE INDEX reconciliation_matches_target ON reconciliation_matches (target_kind, target_id) WHERE active;

CREATE TABLE reconciliation_discrepancies (
    id            TEXT PRIMARY KEY,
    run_id        TEXT NOT NULL REFERENCES reconciliation_runs (id),
    class         TEXT NOT NULL CHECK (class IN ('missing_in_gateway', 'missing_in_file', 'amount_mismatch',
                                                 'status_mismatch', 'duplicate_in_file', 'fee_mismatch')),
    line_no       BIGINT,
    row_kind      TEXT NOT NULL CHECK (row_kind IN ('payment', 'refund')),
    provider_txn_id TEXT,
    occurrence    BIGINT NOT NULL,
    target_kind   TEXT,
    target_id     TEXT,
    file_amount   BIGINT,
    ledger_amount BIGINT,
    file_fee      BIGINT,
    expected_fee  BIGINT,
    file_status   TEXT,
    ledger_status TEXT,
    evidence      TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('open', 'resolved', 'superseded')),
    resolution    TEXT,
    resolved_by   TEXT,
    resolved_at   TEXT,
    created_at    TEXT NOT NULL
);
CREATE INDEX reconciliation_discrepancies_run ON reconciliation_discrepancies (run_id, class);

-- Who did what to reconciliation, when and why. Append-only.
CREATE TABLE reconciliation_audit (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    at              TEXT NOT NULL,
    actor           TEXT NOT NULL,
    action          TEXT NOT NULL,
    run_id          TEXT,
    discrepancy_id  TEXT,
    note            TEXT,
    ledger_tx_ids   TEXT NOT NULL
);
CREATE TRIGGER reconciliation_audit_no_update BEFORE UPDATE ON reconciliation_audit
BEGIN SELECT RAISE(ABORT, 'the reconciliation audit log is append-only'); END;
CREATE TRIGGER reconciliation_audit_no_delete BEFORE DELETE ON reconciliation_audit
BEGIN SELECT RAISE(ABORT, 'the reconciliation audit log is append-only'); END;

CREATE INDEX payments_provider_txn ON payments (provider_txn_id);
CREATE INDEX refunds_provider_ref ON refunds (provider_ref);
CREATE INDEX ledger_transactions_created ON ledger_transactions (created_at);

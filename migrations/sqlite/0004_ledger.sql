-- What a payment's amount is made of, fixed at creation, so its postings can be made without
-- recomputing anything: the principal (the notice's lines) and the late interest.
ALTER TABLE payments ADD COLUMN interest_part BIGINT NOT NULL DEFAULT 0;
ALTER TABLE payments ADD COLUMN interest_budget_code TEXT;

-- Chart of accounts (DESIGN.md §5). Accounts are created on first use and never removed.
CREATE TABLE ledger_accounts (
    name       TEXT PRIMARY KEY,
    kind       TEXT NOT NULL CHECK (kind IN ('provider_clearing', 'treasury_payable', 'treasury_bank',
                                            'provider_fees', 'refunds_payable', 'suspense')),
    created_at TEXT NOT NULL
);

-- A ledger transaction: transfers that commit together. posting_key makes "posted once" a
-- database constraint (e.g. confirm:<payment id>).
CREATE TABLE ledger_transactions (
    id          TEXT PRIMARY KEY,
    posting_key TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL,
    payment_id  TEXT,
    notice_code TEXT,
    corrects    TEXT REFERENCES ledger_transactions (id),
    memo        TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE INDEX ledger_transactions_payment ON ledger_transactions (payment_id);
CREATE INDEX ledger_transactions_notice ON ledger_transactions (notice_code);

-- Double entry: each row moves amount from one account to another, so every row — and every
-- transaction — balances by construction (sum of debits = sum of credits).
CREATE TABLE ledger_transfers (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    transaction_id TEXT NOT NULL REFERENCES ledger_transactions (id),
    debit_account  TEXT NOT NULL REFERENCES ledger_accounts (name),
    credit_account TEXT NOT NULL REFERENCES ledger_accounts (name),
    amount         BIGINT NOT NULL CHECK (amount > 0),
    created_at     TEXT NOT NULL,
    CHECK (debit_account <> credit_account)
);
CREATE INDEX ledger_transfers_transaction ON ledger_transfers (transaction_id);
CREATE INDEX ledger_transfers_debit ON ledger_transfers (debit_account);
CREATE INDEX ledger_transfers_credit ON ledger_transfers (credit_account);

-- The hash chain: a sealing step gives each transfer its place (seq, gap-free) and
-- hash = SHA-256(prev_hash || canonical bytes), after the transfer committed — so the chain is
-- never a lock on the path that confirms payments.
CREATE TABLE ledger_seals (
    seq         BIGINT PRIMARY KEY,
    transfer_id BIGINT NOT NULL UNIQUE REFERENCES ledger_transfers (id),
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL,
    sealed_at   TEXT NOT NULL
);

-- Every callback as received, before it is acted on (bodies with citizens' identifiers masked).
CREATE TABLE callback_inbox (
    id           TEXT PRIMARY KEY,
    provider     TEXT NOT NULL,
    method       TEXT NOT NULL,
    path         TEXT NOT NULL,
    query        TEXT NOT NULL,
    headers      TEXT NOT NULL,
    body         TEXT NOT NULL,
    body_sha256  TEXT NOT NULL,
    body_bytes   BIGINT NOT NULL,
    source_addr  TEXT NOT NULL,
    received_at  TEXT NOT NULL,
    verification TEXT CHECK (verification IN ('verified', 'rejected')),
    outcome      TEXT,
    detail       TEXT,
    merchant_ref TEXT,
    processed_at TEXT
);
CREATE INDEX callback_inbox_received ON callback_inbox (received_at);
CREATE INDEX callback_inbox_ref ON callback_inbox (merchant_ref);

-- Transactional outbox: events written in the same transaction as the change they announce.
CREATE TABLE outbox_events (
    id          TEXT PRIMARY KEY,
    -- What makes the event once-only, e.g. notice.paid:<notice code>.
    dedupe_key  TEXT NOT NULL UNIQUE,
    notice_code TEXT NOT NULL,
    notice_seq  BIGINT NOT NULL,
    event_type  TEXT NOT NULL,
    payload     TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    UNIQUE (notice_code, notice_seq)
);

-- One delivery per event and endpoint, retried with backoff until acknowledged.
CREATE TABLE webhook_deliveries (
    event_id        TEXT NOT NULL REFERENCES outbox_events (id),
    endpoint        TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'delivered')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    last_error      TEXT,
    delivered_at    TEXT,
    PRIMARY KEY (event_id, endpoint)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);

-- Append-only: the database refuses to change or remove ledger rows.
CREATE TRIGGER ledger_accounts_no_update BEFORE UPDATE ON ledger_accounts
BEGIN SELECT RAISE(ABORT, 'ledger is append-only: ledger_accounts cannot be updated'); END;
CREATE TRIGGER ledger_accounts_no_delete BEFORE DELETE ON ledger_accounts
BEGIN SELECT RAISE(ABORT, 'ledger is append-only: ledger_accounts cannot be deleted'); END;
CREATE TRIGGER ledger_transactions_no_update BEFORE UPDATE ON ledger_transactions
BEGIN SELECT RAISE(ABORT, 'ledger is append-only: ledger_transactions cannot be updated'); END;
CREATE TRIGGER ledger_transactions_no_delete BEFORE DELETE ON ledger_transactions
BEGIN SELECT RAISE(ABORT, 'ledger is append-only: ledger_transactions cannot be deleted'); END;
CREATE TRIGGER ledger_transfers_no_update BEFORE UPDATE ON ledger_transfers
BEGIN SELECT RAISE(ABORT, 'ledger is append-only: ledger_transfers cannot be updated'); END;
CREATE TRIGGER ledger_transfers_no_delete BEFORE DELETE ON ledger_transfers
BEGIN SELECT RAISE(ABORT, 'ledger is append-only: ledger_transfers cannot be deleted'); END;
CREATE TRIGGER ledger_seals_no_update BEFORE UPDATE ON ledger_seals
BEGIN SELECT RAISE(ABORT, 'ledger is append-only: ledger_seals cannot be updated'); END;
CREATE TRIGGER ledger_seals_no_delete BEFORE DELETE ON ledger_seals
BEGIN SELECT RAISE(ABORT, 'ledger is append-only: ledger_seals cannot be deleted'); END;

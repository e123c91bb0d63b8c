-- Quotes: a calculation locked until valid_until. Lines are a JSON snapshot of what was computed.
CREATE TABLE quotes (
    id             TEXT PRIMARY KEY,
    jurisdiction   TEXT NOT NULL,
    valuation_date DATE NOT NULL,
    request        TEXT NOT NULL,
    lines          TEXT NOT NULL,
    total          BIGINT NOT NULL CHECK (total >= 0),
    created_by     TEXT NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    valid_until    TIMESTAMPTZ NOT NULL
);

-- Payment notices (thông báo nộp tiền). Amounts are whole đồng.
CREATE TABLE notices (
    id                TEXT PRIMARY KEY,
    code              TEXT NOT NULL UNIQUE,
    quote_id          TEXT NOT NULL REFERENCES quotes (id),
    jurisdiction      TEXT NOT NULL,
    payer_name        TEXT NOT NULL,
    payer_identifier  TEXT NOT NULL,
    dossier_ref       TEXT NOT NULL,
    principal         BIGINT NOT NULL CHECK (principal > 0),
    due_date          DATE NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('unpaid', 'paid', 'cancelled')),
    issued_by         TEXT NOT NULL,
    issued_at         TIMESTAMPTZ NOT NULL,
    cancel_reason     TEXT,
    cancelled_by      TEXT,
    cancelled_at      TIMESTAMPTZ,
    CHECK ((status = 'cancelled') = (cancelled_at IS NOT NULL))
);
CREATE UNIQUE INDEX notices_quote ON notices (quote_id);
CREATE INDEX notices_dossier ON notices (dossier_ref);

-- The itemised lines of a notice, copied from its quote at issue and never changed.
CREATE TABLE notice_lines (
    notice_id    TEXT NOT NULL REFERENCES notices (id),
    line_no      INTEGER NOT NULL,
    kind         TEXT NOT NULL,
    description  TEXT NOT NULL,
    base         BIGINT NOT NULL CHECK (base >= 0),
    rate         TEXT NOT NULL,
    amount       BIGINT NOT NULL CHECK (amount >= 0),
    legal_basis  TEXT NOT NULL,
    rule_id      TEXT NOT NULL,
    rule_version BIGINT NOT NULL,
    budget_code  TEXT NOT NULL,
    exemption    TEXT,
    unconfirmed  BOOLEAN NOT NULL,
    PRIMARY KEY (notice_id, line_no)
);

-- Payments: one attempt to pay a notice through one provider. The amount is fixed at creation.
CREATE TABLE payments (
    id               TEXT PRIMARY KEY,
    -- The reference we gave the provider (vnp_TxnRef, MoMo orderId, ZaloPay app_trans_id, QR bill number).
    merchant_ref     TEXT NOT NULL UNIQUE,
    notice_id        TEXT NOT NULL REFERENCES notices (id),
    notice_code      TEXT NOT NULL,
    provider         TEXT NOT NULL,
    amount           BIGINT NOT NULL CHECK (amount > 0),
    status           TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed', 'expired', 'cancelled',
                                                     'refunded', 'partially_refunded')),
    provider_txn_id  TEXT,
    redirect_url     TEXT,
    qr_payload       TEXT,
    return_url       TEXT,
    locale           TEXT NOT NULL,
    -- Paid while its notice was already paid: to be refunded, never lost.
    overpayment      BOOLEAN NOT NULL DEFAULT false,
    -- A success that arrived after the payment had ended (expired, failed, cancelled notice):
    -- the money is held in suspense and flagged for refund.
    late_success     BOOLEAN NOT NULL DEFAULT false,
    refund_due       BIGINT NOT NULL DEFAULT 0 CHECK (refund_due >= 0),
    created_at       TIMESTAMPTZ NOT NULL,
    expires_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    next_poll_at     TIMESTAMPTZ NOT NULL,
    poll_attempts    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX payments_due_for_poll ON payments (status, next_poll_at);
CREATE INDEX payments_notice ON payments (notice_id);

-- Every state change of a payment, with its cause. Append-only.
CREATE TABLE payment_events (
    payment_id  TEXT NOT NULL REFERENCES payments (id),
    seq         INTEGER NOT NULL,
    from_status TEXT,
    to_status   TEXT NOT NULL,
    cause       TEXT NOT NULL,
    detail      TEXT,
    at          TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (payment_id, seq)
);

ALTER TABLE notices ADD COLUMN paid_at TIMESTAMPTZ;
ALTER TABLE notices ADD COLUMN paid_by_payment TEXT;

-- Bank credits that name no payment we can find: kept, never lost, for staff to resolve.
CREATE TABLE unmatched_credits (
    id             TEXT PRIMARY KEY,
    bank           TEXT NOT NULL,
    transaction_id TEXT NOT NULL,
    amount         BIGINT NOT NULL,
    description    TEXT NOT NULL,
    raw            TEXT NOT NULL,
    received_at    TIMESTAMPTZ NOT NULL,
    UNIQUE (bank, transaction_id)
);

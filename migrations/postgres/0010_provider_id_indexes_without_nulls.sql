-- The provider's own id of a payment (its transaction id) or of a refund (its reference) is known
-- only once the provider has answered, and reconciliation, the one reader of these indexes, looks
-- them up by given ids (`= ANY`, `IN`), which never match NULL (PostgreSQL uses a partial index for
-- them, generic plans included). So each index keeps only the rows that have one: creating a
-- payment or a refund adds no entry (SQLite's migration 0008 says what it saves there).
DROP INDEX payments_provider_txn;
CREATE INDEX payments_provider_txn ON payments (provider_txn_id) WHERE provider_txn_id IS NOT NULL;
DROP INDEX refunds_provider_ref;
CREATE INDEX refunds_provider_ref ON refunds (provider_ref) WHERE provider_ref IS NOT NULL;

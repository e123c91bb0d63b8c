-- The provider's own id of a payment (its transaction id) or of a refund (its reference) is known
-- only once the provider has answered, and reconciliation, the one reader of these indexes, looks
-- them up by given ids (`=`, `IN`), which never match NULL. So each index keeps only the rows that
-- have one: a payment or refund waiting for its answer has no entry, and the answer adds one
-- instead of also taking the row out of the NULL entries (for a confirmed payment, about 1 KB, 2%,
-- less written in the callback benchmark, docs/callback-benchmark.md "Machine (o)").
DROP INDEX payments_provider_txn;
CREATE INDEX payments_provider_txn ON payments (provider_txn_id) WHERE provider_txn_id IS NOT NULL;
DROP INDEX refunds_provider_ref;
CREATE INDEX refunds_provider_ref ON refunds (provider_ref) WHERE provider_ref IS NOT NULL;

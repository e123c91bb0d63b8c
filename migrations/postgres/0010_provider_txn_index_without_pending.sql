-- A payment has a provider transaction id only once the provider has answered for it, and
-- reconciliation, the one reader of this index, looks payments up by given ids (`= ANY`), which
-- never match NULL (PostgreSQL uses the partial index for it, generic plans included). So the
-- index keeps only payments that have one: creating a payment adds no entry to it (SQLite's
-- migration 0008 says what it saves there on each confirmation).
DROP INDEX payments_provider_txn;
CREATE INDEX payments_provider_txn ON payments (provider_txn_id) WHERE provider_txn_id IS NOT NULL;

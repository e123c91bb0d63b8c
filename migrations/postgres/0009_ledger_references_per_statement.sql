-- The ledger's references, checked once per statement instead of once per row.
--
-- A foreign key runs a query per inserted row and share-locks the row it references, so every
-- confirmed payment paid for eight such queries (three per transfer, one per seal), and every
-- batch share-locked the same few account rows (per `perf` in the callback benchmark, 12% of the
-- machine went to these checks). The rows referenced here — accounts, ledger transactions,
-- transfers — are append-only (0004: UPDATE, DELETE and TRUNCATE are rejected), so the lock
-- guards against nothing that can happen; what remains of the foreign key, "the referenced row
-- exists", is checked below for all of a statement's rows by one query.
ALTER TABLE ledger_transfers
    DROP CONSTRAINT ledger_transfers_transaction_id_fkey,
    DROP CONSTRAINT ledger_transfers_debit_account_fkey,
    DROP CONSTRAINT ledger_transfers_credit_account_fkey;
ALTER TABLE ledger_seals DROP CONSTRAINT ledger_seals_transfer_id_fkey;

CREATE FUNCTION ledger_transfers_reference_existing_rows() RETURNS trigger AS $$
DECLARE
    missing TEXT;
BEGIN
    SELECT 'ledger transaction ' || n.transaction_id INTO missing FROM inserted_transfers n
      LEFT JOIN ledger_transactions x ON x.id = n.transaction_id WHERE x.id IS NULL LIMIT 1;
    IF NOT FOUND THEN
        SELECT 'account ' || n.name INTO missing
          FROM (SELECT debit_account AS name FROM inserted_transfers UNION SELECT credit_account FROM inserted_transfers) n
          LEFT JOIN ledger_accounts a ON a.name = n.name WHERE a.name IS NULL LIMIT 1;
    END IF;
    IF FOUND THEN
        RAISE EXCEPTION 'a ledger transfer names %, which does not exist', missing
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER ledger_transfers_reference_existing_rows AFTER INSERT ON ledger_transfers
    REFERENCING NEW TABLE AS inserted_transfers
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_transfers_reference_existing_rows();

CREATE FUNCTION ledger_seals_reference_existing_transfers() RETURNS trigger AS $$
DECLARE
    orphan BIGINT;
BEGIN
    SELECT n.transfer_id INTO orphan FROM inserted_seals n
      LEFT JOIN ledger_transfers t ON t.id = n.transfer_id WHERE t.id IS NULL LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'a ledger seal names transfer %, which does not exist', orphan
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER ledger_seals_reference_existing_transfers AFTER INSERT ON ledger_seals
    REFERENCING NEW TABLE AS inserted_seals
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_seals_reference_existing_transfers();

-- What the sealer's floor rests on (SealFloor in src/store/ledger.rs), made rules of the database:
-- 1. Transfer ids are handed out one at a time (no per-session cache), so the sequence's last
--    value bounds every id taken so far.
-- 2. A statement inserting transfers runs in a transaction that already holds a transaction id
--    (it inserted its ledger_transactions row first), so each transfer id is taken after its
--    transaction's id was assigned. A statement-level trigger checks it once per statement.
ALTER SEQUENCE ledger_transfers_id_seq CACHE 1;

CREATE FUNCTION ledger_transfers_after_their_transaction() RETURNS trigger AS $$
BEGIN
    IF pg_current_xact_id_if_assigned() IS NULL THEN
        RAISE EXCEPTION 'ledger transfers are inserted after their ledger transaction row, in the same database transaction';
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER ledger_transfers_after_their_transaction BEFORE INSERT ON ledger_transfers
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_transfers_after_their_transaction();

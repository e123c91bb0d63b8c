-- PostgreSQL role set-up for production. Run once as a superuser.
-- paygate_owner owns the schema and runs `paygate migrate`; paygate_app is what `paygate serve`
-- connects as: it can read and write rows but not change the schema, and (from the ledger
-- issue on) it cannot UPDATE, DELETE or TRUNCATE ledger tables.
CREATE ROLE paygate_owner LOGIN;            -- set a password out of band
CREATE ROLE paygate_app LOGIN;              -- set a password out of band
CREATE DATABASE paygate OWNER paygate_owner;
\connect paygate
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO paygate_app;
ALTER DEFAULT PRIVILEGES FOR ROLE paygate_owner IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO paygate_app;
ALTER DEFAULT PRIVILEGES FOR ROLE paygate_owner IN SCHEMA public
    GRANT USAGE, SELECT ON SEQUENCES TO paygate_app;

-- After `paygate migrate` (as paygate_owner) has created the tables: the ledger is append-only.
-- Triggers already refuse UPDATE, DELETE and TRUNCATE on the ledger tables for everyone; in
-- addition the application's role is never given those rights on them, and TRUNCATE is never
-- granted on any table (the default privileges above do not include it).
REVOKE UPDATE, DELETE, TRUNCATE ON ledger_accounts, ledger_transactions, ledger_transfers, ledger_seals,
    reconciliation_audit FROM paygate_app;
REVOKE TRUNCATE ON ALL TABLES IN SCHEMA public FROM paygate_app;

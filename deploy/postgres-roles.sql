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

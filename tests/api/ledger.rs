//! The ledger: append-only in the database, a hash chain that finds tampering, exactly-once
//! confirmation across processes, the callback inbox, and signed outgoing webhooks.

use std::sync::{Arc, Mutex};

use paygate::auth::Role;
use paygate::providers::protocol::vnpay;
use paygate::webhooks::Planning;
use serde_json::{Value, json};
use sqlx::Connection;

use crate::helpers::{JsonServe, TestApp, paygate, read};

/// A VNPAY success IPN for a payment, signed with the sandbox secret.
fn vnpay_ipn(merchant_ref: &str, amount: i64) -> String {
    vnpay_ipn_for_amount(merchant_ref, &(amount * 100).to_string())
}

/// A success IPN signed with the sandbox secret, its `vnp_Amount` exactly `vnp_amount`.
fn vnpay_ipn_for_amount(merchant_ref: &str, vnp_amount: &str) -> String {
    vnpay_ipn_reporting(merchant_ref, vnp_amount, "00")
}

/// An IPN signed with the sandbox secret whose `vnp_TransactionStatus` is `status`.
fn vnpay_ipn_reporting(merchant_ref: &str, vnp_amount: &str, status: &str) -> String {
    let secret = secrecy::SecretString::from("sandbox-vnpay-hash-secret".to_string());
    let params: Vec<(&str, String)> = vec![
        ("vnp_Amount", vnp_amount.into()),
        ("vnp_BankCode", "NCB".into()),
        ("vnp_BankTranNo", "VNP1".into()),
        ("vnp_CardType", "ATM".into()),
        ("vnp_OrderInfo", "Thanh toan".into()),
        ("vnp_PayDate", "20261126101500".into()),
        ("vnp_ResponseCode", "00".into()),
        ("vnp_TmnCode", "PGSANDBX".into()),
        ("vnp_TransactionNo", "14000001".into()),
        ("vnp_TransactionStatus", status.into()),
        ("vnp_TxnRef", merchant_ref.into()),
    ];
    vnpay::sign_params(&secret, &params)
}

async fn vnpay_payment(app: &TestApp) -> (String, String, String, i64) {
    let code = app.issue_small_notice().await;
    let r = app.start_payment(&code, "vnpay").await;
    assert_eq!(r.status, 201, "{}", r.text);
    let b = &r.body;
    (code, b["id"].as_str().unwrap().into(), b["merchant_ref"].as_str().unwrap().into(), b["amount"].as_i64().unwrap())
}

/// A VNPAY payment its IPN has confirmed (answered `00`).
async fn paid_vnpay_payment(app: &TestApp) -> (String, String, String, i64) {
    let payment = vnpay_payment(app).await;
    let r = app.get(&format!("/callbacks/vnpay?{}", vnpay_ipn(&payment.2, payment.3)), None).await;
    assert_eq!(r.body["RspCode"], "00", "{}", r.text);
    payment
}

#[tokio::test]
async fn fifty_concurrent_deliveries_over_three_processes_confirm_and_post_once() {
    let a = TestApp::spawn().await;
    let b = a.spawn_sibling(|_| {}).await;
    let c = a.spawn_sibling(|_| {}).await;
    let (code, id, merchant_ref, amount) = vnpay_payment(&a).await;
    let query = vnpay_ipn(&merchant_ref, amount);
    let apps = [&a, &b, &c];
    let replies = futures::future::join_all((0..50).map(|i| {
        let app = apps[i % 3];
        let url = app.url(&format!("/callbacks/vnpay?{query}"));
        async move { read(app.client.get(url).send().await.unwrap()).await }
    }))
    .await;
    let mut codes: Vec<String> =
        replies.iter().map(|r| r.body["RspCode"].as_str().unwrap_or("?").to_string()).collect();
    codes.sort();
    codes.dedup();
    let confirmed = replies.iter().filter(|r| r.body["RspCode"] == "00").count();
    assert_eq!(confirmed, 1, "exactly one delivery confirms: {codes:?}");
    assert!(replies.iter().all(|r| r.body["RspCode"] == "00" || r.body["RspCode"] == "02"), "{codes:?}");

    let p = a.payment(&id).await;
    let transitions = p["history"].as_array().unwrap().iter().filter(|e| e["to_status"] == "succeeded").count();
    assert_eq!(transitions, 1);
    let sql = format!("SELECT COUNT(*) FROM ledger_transactions WHERE payment_id = '{id}'");
    assert_eq!(a.scalar(&sql).await, 1, "one set of postings");
    let sql = format!("SELECT COUNT(*) FROM outbox_events WHERE notice_code = '{code}' AND event_type = 'notice.paid'");
    assert_eq!(a.scalar(&sql).await, 1, "one notice.paid event");
    assert_eq!(a.scalar("SELECT COUNT(*) FROM callback_inbox").await, 50, "every delivery is in the inbox");
    a.assert_ledger_invariants().await;
}

/// The same over three `paygate serve` processes of the binary, each with its own pool and
/// payment writer, on one database (PostgreSQL, or one SQLite file).
#[tokio::test]
async fn fifty_concurrent_deliveries_over_three_serve_processes_confirm_and_post_once() {
    let app = TestApp::spawn().await;
    let (code, id, merchant_ref, amount) = vnpay_payment(&app).await;
    let serves: Vec<JsonServe> = (0..3).map(|_| JsonServe::start(paygate(&app.db))).collect();
    let addresses: Vec<String> = serves.iter().map(JsonServe::address).collect();
    let query = vnpay_ipn(&merchant_ref, amount);
    let replies = futures::future::join_all((0..50).map(|i| {
        let url = format!("http://{}/callbacks/vnpay?{query}", addresses[i % 3]);
        let client = app.client.clone();
        async move { read(client.get(url).send().await.unwrap()).await }
    }))
    .await;
    let codes: Vec<&str> = replies.iter().map(|r| r.body["RspCode"].as_str().unwrap_or("?")).collect();
    assert_eq!(codes.iter().filter(|c| **c == "00").count(), 1, "exactly one delivery confirms: {codes:?}");
    assert!(codes.iter().all(|c| *c == "00" || *c == "02"), "the others: already confirmed: {codes:?}");

    let p = app.payment(&id).await;
    assert_eq!(p["status"], "succeeded");
    let transitions = p["history"].as_array().unwrap().iter().filter(|e| e["to_status"] == "succeeded").count();
    assert_eq!(transitions, 1);
    assert_eq!(app.notice(&code).await["status"], "paid");
    let sql = format!("SELECT COUNT(*) FROM ledger_transactions WHERE payment_id = '{id}'");
    assert_eq!(app.scalar(&sql).await, 1, "one set of postings");
    let sql = format!("SELECT COUNT(*) FROM outbox_events WHERE notice_code = '{code}' AND event_type = 'notice.paid'");
    assert_eq!(app.scalar(&sql).await, 1, "one notice.paid event");
    assert_eq!(app.scalar("SELECT COUNT(*) FROM callback_inbox").await, 50, "every delivery is in the inbox");
    for serve in serves {
        serve.sigterm();
        assert!(serve.exit().await.success());
    }
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn callbacks_for_many_payments_at_once_are_applied_together_each_exactly_once() {
    // Deliveries of 12 payments' IPNs (each twice) and unknown references, all at once over two
    // processes: the payment writers batch them, and every payment is confirmed and posted once.
    let a = TestApp::spawn().await;
    let b = a.spawn_sibling(|_| {}).await;
    let mut payments = Vec::new();
    for _ in 0..12 {
        payments.push(vnpay_payment(&a).await);
    }
    let mut deliveries: Vec<(usize, String)> = Vec::new();
    for (i, (_, _, merchant_ref, amount)) in payments.iter().enumerate() {
        deliveries.push((i, vnpay_ipn(merchant_ref, *amount)));
        deliveries.push((i + 1, vnpay_ipn(merchant_ref, *amount)));
    }
    deliveries.push((0, vnpay_ipn("PGNOSUCHPAYMENT1", 50_000)));
    let apps = [&a, &b];
    let replies = futures::future::join_all(deliveries.iter().map(|(n, query)| {
        let app = apps[n % 2];
        let url = app.url(&format!("/callbacks/vnpay?{query}"));
        async move { read(app.client.get(url).send().await.unwrap()).await }
    }))
    .await;
    let count = |code: &str| replies.iter().filter(|r| r.body["RspCode"] == code).count();
    assert_eq!(
        (count("00"), count("02"), count("01")),
        (12, 12, 1),
        "{:?}",
        replies.iter().map(|r| &r.body).collect::<Vec<_>>()
    );
    for (code, id, _, amount) in &payments {
        let p = a.payment(id).await;
        assert_eq!(p["status"], "succeeded");
        let transitions = p["history"].as_array().unwrap().iter().filter(|e| e["to_status"] == "succeeded").count();
        assert_eq!(transitions, 1, "{id}");
        let sql = format!("SELECT COUNT(*) FROM ledger_transactions WHERE payment_id = '{id}'");
        assert_eq!(a.scalar(&sql).await, 1, "one posting for {id}");
        let sql = format!(
            "SELECT COALESCE(SUM(amount), 0) FROM ledger_transfers t JOIN ledger_transactions x \
             ON x.id = t.transaction_id WHERE x.payment_id = '{id}'"
        );
        assert_eq!(a.scalar(&sql).await, *amount, "posted to the đồng for {id}");
        let sql =
            format!("SELECT COUNT(*) FROM outbox_events WHERE notice_code = '{code}' AND event_type = 'notice.paid'");
        assert_eq!(a.scalar(&sql).await, 1, "one notice.paid for {code}");
    }
    assert_eq!(a.scalar("SELECT COUNT(*) FROM callback_inbox").await, 25, "every delivery is in the inbox");
    let sql = "SELECT COUNT(*) FROM callback_inbox WHERE outcome = 'unknown_payment'";
    assert_eq!(a.scalar(sql).await, 1);
    a.assert_ledger_invariants().await;
}

#[tokio::test]
async fn the_database_refuses_to_change_ledger_rows() {
    let app = TestApp::spawn().await;
    paid_vnpay_payment(&app).await;
    let statements = [
        "UPDATE ledger_transfers SET amount = amount + 1",
        "DELETE FROM ledger_transfers",
        "UPDATE ledger_transactions SET memo = 'edited'",
        "DELETE FROM ledger_transactions",
        "DELETE FROM ledger_accounts",
    ];
    if app.db.is_postgres() {
        // As the application's role: a login without superuser rights and without TRUNCATE.
        let role = format!("paygate_app_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(app.db.url()).await.unwrap();
        for sql in [
            format!("CREATE ROLE {role} LOGIN"),
            format!("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}"),
        ] {
            sqlx::query(&sql).execute(&mut admin).await.unwrap();
        }
        let mut url = reqwest::Url::parse(app.db.url()).unwrap();
        url.set_username(&role).unwrap();
        let mut conn = sqlx::PgConnection::connect(url.as_str()).await.unwrap();
        for sql in statements.iter().copied().chain(["TRUNCATE ledger_transfers CASCADE"]) {
            let err = sqlx::query(sql).execute(&mut conn).await.expect_err(sql).to_string();
            assert!(err.contains("append-only") || err.contains("permission denied"), "{sql}: {err}");
        }
        // Even the owner cannot truncate: the trigger refuses it.
        let err = sqlx::query("TRUNCATE ledger_transfers CASCADE").execute(&mut admin).await.unwrap_err().to_string();
        assert!(err.contains("append-only"), "{err}");
        conn.close().await.unwrap();
        sqlx::query(&format!("DROP OWNED BY {role}")).execute(&mut admin).await.unwrap();
        sqlx::query(&format!("DROP ROLE {role}")).execute(&mut admin).await.unwrap();
    } else {
        let mut conn = sqlx::SqliteConnection::connect(app.db.url()).await.unwrap();
        for sql in statements {
            let err = sqlx::query(sql).execute(&mut conn).await.expect_err(sql).to_string();
            assert!(err.contains("append-only"), "{sql}: {err}");
        }
    }
    app.assert_ledger_invariants().await;
}

/// Transfers name their ledger transaction and accounts, seals their transfer; the database
/// refuses rows naming one that does not exist (on PostgreSQL a check per statement, SQLite's
/// foreign keys), whatever else the statement inserts.
#[tokio::test]
async fn the_database_refuses_ledger_rows_that_name_rows_that_do_not_exist() {
    let app = TestApp::spawn().await;
    paid_vnpay_payment(&app).await;
    let (tx, debit, credit) = (
        "(SELECT transaction_id FROM ledger_transfers LIMIT 1)",
        "(SELECT debit_account FROM ledger_transfers LIMIT 1)",
        "(SELECT credit_account FROM ledger_transfers LIMIT 1)",
    );
    let transfer = |tx: &str, debit: &str, credit: &str| {
        format!(
            "INSERT INTO ledger_transfers (transaction_id, debit_account, credit_account, amount, created_at) \
             VALUES ({tx}, {debit}, {credit}, 1, CURRENT_TIMESTAMP), ({tx}, {debit}, {credit}, 1, CURRENT_TIMESTAMP)"
        )
    };
    let transaction = "INSERT INTO ledger_transactions (id, posting_key, kind, payment_id, notice_code, corrects, memo, \
         created_at) VALUES ('lt_orphans', 'test:orphans', 'test', NULL, NULL, NULL, 'test', CURRENT_TIMESTAMP)";
    let statements = [
        transfer("'lt_nowhere'", debit, credit),
        transfer(tx, "'suspense:nowhere'", credit),
        transfer(tx, debit, "'suspense:nowhere'"),
        "INSERT INTO ledger_seals (seq, transfer_id, prev_hash, hash, sealed_at) \
         VALUES (1000000, 1000000, 'x', 'y', CURRENT_TIMESTAMP)"
            .to_string(),
    ];
    let before = app.scalar("SELECT COUNT(*) FROM ledger_transfers").await;
    for sql in &statements {
        let err = if app.db.is_postgres() {
            let mut conn = sqlx::PgConnection::connect(app.db.url()).await.unwrap();
            // Inside a transaction that wrote its ledger transaction first, as postings do.
            sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
            sqlx::query(transaction).execute(&mut conn).await.unwrap();
            sqlx::query(sql).execute(&mut conn).await.expect_err(sql).to_string()
        } else {
            let mut conn = sqlx::SqliteConnection::connect(app.db.url()).await.unwrap();
            sqlx::query(sql).execute(&mut conn).await.expect_err(sql).to_string()
        };
        assert!(err.contains("does not exist") || err.contains("FOREIGN KEY constraint failed"), "{sql}: {err}");
    }
    assert_eq!(app.scalar("SELECT COUNT(*) FROM ledger_transfers").await, before);
    app.assert_ledger_invariants().await;
}

/// On PostgreSQL a posting that took a lower transfer id can commit after higher ones were
/// sealed; the sealer must still chain it. (SQLite has one writer: ids commit in order.)
#[tokio::test]
async fn a_posting_that_commits_after_later_ones_were_sealed_is_still_chained() {
    let app = TestApp::spawn().await;
    if !app.db.is_postgres() {
        return;
    }
    paid_vnpay_payment(&app).await;
    let auditor = app.token(Role::Auditor).await;
    // The floor's premise is a rule of the database: a transfer is inserted only by a transaction
    // that already wrote (and so holds an id), never on its own.
    let mut slow = sqlx::PgConnection::connect(app.db.url()).await.unwrap();
    let err = sqlx::query(
        "INSERT INTO ledger_transfers (transaction_id, debit_account, credit_account, amount, created_at) \
         SELECT transaction_id, debit_account, credit_account, 1, now() FROM ledger_transfers LIMIT 1",
    )
    .execute(&mut slow)
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("inserted after their ledger transaction row"), "{err}");
    // A slow posting: it takes its transfer id, then stays open.
    sqlx::query("BEGIN").execute(&mut slow).await.unwrap();
    sqlx::query(
        "INSERT INTO ledger_transactions (id, posting_key, kind, payment_id, notice_code, corrects, memo, created_at) \
         VALUES ('lt_slow', 'test:slow', 'late_commit', NULL, NULL, NULL, 'committed late', now())",
    )
    .execute(&mut slow)
    .await
    .unwrap();
    let slow_id: i64 = sqlx::query_scalar(
        "INSERT INTO ledger_transfers (transaction_id, debit_account, credit_account, amount, created_at) \
         SELECT 'lt_slow', debit_account, credit_account, 1, now() FROM ledger_transfers \
         WHERE credit_account LIKE 'treasury_payable:%' LIMIT 1 RETURNING id",
    )
    .fetch_one(&mut slow)
    .await
    .unwrap();
    // A sealing round runs while it is open (no transaction has finished since it began) …
    let r = app.get("/v1/ledger/verify", Some(&auditor)).await;
    assert_eq!(r.body["ok"], true, "{}", r.text);
    // … and later postings commit and are sealed, over several rounds.
    for _ in 0..3 {
        let (_, _, merchant_ref, amount) = vnpay_payment(&app).await;
        app.get(&format!("/callbacks/vnpay?{}", vnpay_ipn(&merchant_ref, amount)), None).await;
    }
    let r = app.get("/v1/ledger/verify", Some(&auditor)).await;
    assert_eq!((r.body["ok"].clone(), r.body["unsealed"].clone()), (json!(true), json!(0)), "{}", r.text);
    let above: i64 = app.scalar(&format!("SELECT COUNT(*) FROM ledger_seals WHERE transfer_id > {slow_id}")).await;
    assert!(above >= 6, "the later transfers are sealed: {above}");

    sqlx::query("COMMIT").execute(&mut slow).await.unwrap();
    let r = app.get("/v1/ledger/verify", Some(&auditor)).await;
    assert_eq!((r.body["ok"].clone(), r.body["unsealed"].clone()), (json!(true), json!(0)), "{}", r.text);
    assert_eq!(app.scalar(&format!("SELECT COUNT(*) FROM ledger_seals WHERE transfer_id = {slow_id}")).await, 1);
    assert_eq!(r.body["sealed"], app.count("ledger_transfers").await, "{}", r.text);
}

/// On SQLite a payment batch chains its transfers before it commits: a confirmed payment's
/// entries carry their place in the chain as soon as the callback is answered, with the
/// background sealer held off; a transfer left unsealed by another writer is chained first, in
/// id order. On PostgreSQL the entries wait for the sealer.
#[tokio::test]
async fn on_sqlite_a_confirmation_is_chained_in_its_own_commit() {
    let app = TestApp::spawn_with(|c| c.ledger.seal_interval_ms = 3_600_000).await;
    let auditor = app.token(Role::Auditor).await;
    let entries = |id: String| {
        let (app, auditor) = (&app, &auditor);
        async move {
            let r = app.get(&format!("/v1/ledger/entries?payment_id={id}"), Some(auditor)).await;
            assert_eq!(r.status, 200, "{}", r.text);
            r.body["entries"].as_array().unwrap().iter().map(|e| e["seq"].as_i64()).collect::<Vec<_>>()
        }
    };
    let (_, first, _, _) = paid_vnpay_payment(&app).await;
    if !app.db.is_postgres() {
        assert_eq!(entries(first.clone()).await, [Some(1), Some(2)]);
        // A transfer another writer left unsealed (as the sealer would find it) …
        let mut conn = sqlx::SqliteConnection::connect(app.db.url()).await.unwrap();
        sqlx::query(
            "INSERT INTO ledger_transactions (id, posting_key, kind, payment_id, notice_code, corrects, memo, created_at) \
             VALUES ('lt_other', 'test:other', 'test', NULL, NULL, NULL, 'left unsealed', '2026-12-06T08:00:00+00:00')",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO ledger_transfers (transaction_id, debit_account, credit_account, amount, created_at) \
             SELECT 'lt_other', debit_account, credit_account, 1, '2026-12-06T08:00:00+00:00' FROM ledger_transfers LIMIT 1",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        // … is chained by the next batch, before that batch's own.
        let (_, second, _, _) = paid_vnpay_payment(&app).await;
        assert_eq!(entries(second).await, [Some(4), Some(5)]);
        assert_eq!(
            app.scalar(
                "SELECT seq FROM ledger_seals s JOIN ledger_transfers t ON t.id = s.transfer_id \
             WHERE t.transaction_id = 'lt_other'"
            )
            .await,
            3
        );
    } else {
        assert_eq!(entries(first.clone()).await, [None, None]);
    }
    let r = app.get("/v1/ledger/verify", Some(&auditor)).await;
    assert_eq!((r.body["ok"].clone(), r.body["unsealed"].clone()), (json!(true), json!(0)), "{}", r.text);
    assert_eq!(entries(first).await, [Some(1), Some(2)]);
    app.assert_ledger_invariants().await;
}

/// On SQLite a batch whose sealing fails still confirms its payments: the seals roll back to a
/// savepoint and the sealer chains the transfers later.
#[tokio::test]
async fn a_sealing_failure_inside_a_batch_leaves_the_confirmation_and_the_sealer_catches_up() {
    let app = TestApp::spawn_with(|c| c.ledger.seal_interval_ms = 3_600_000).await;
    if app.db.is_postgres() {
        return;
    }
    let mut conn = sqlx::SqliteConnection::connect(app.db.url()).await.unwrap();
    sqlx::query("CREATE TRIGGER refuse_seals BEFORE INSERT ON ledger_seals BEGIN SELECT RAISE(ABORT, 'no seals'); END")
        .execute(&mut conn)
        .await
        .unwrap();
    let (code, id, _, amount) = paid_vnpay_payment(&app).await;
    let auditor = app.token(Role::Auditor).await;
    let r = app.get(&format!("/v1/payments/{id}"), None).await;
    assert_eq!(r.body["status"], "succeeded", "{}", r.text);
    assert_eq!(app.scalar(&format!("SELECT COUNT(*) FROM notices WHERE code = '{code}' AND status = 'paid'")).await, 1);
    assert_eq!(app.count("ledger_transfers").await, 2);
    assert_eq!(app.count("ledger_seals").await, 0);
    sqlx::query("DROP TRIGGER refuse_seals").execute(&mut conn).await.unwrap();
    let r = app.get("/v1/ledger/verify", Some(&auditor)).await;
    assert_eq!((r.body["ok"].clone(), r.body["sealed"].clone()), (json!(true), json!(2)), "{}", r.text);
    let r = app.get("/v1/ledger/accounts", Some(&auditor)).await;
    let clearing = r.body.as_array().unwrap().iter().find(|a| a["account"] == "provider_clearing:vnpay").cloned();
    assert_eq!(clearing.map(|a| a["balance"].clone()), Some(json!(amount)), "{}", r.text);
    app.assert_ledger_invariants().await;
}

/// A service with three confirmed VNPAY payments (six transfers), its chain verified whole, and
/// an auditor's token.
async fn three_payments_sealed() -> (TestApp, String) {
    let app = TestApp::spawn().await;
    for _ in 0..3 {
        let (_, _, merchant_ref, amount) = vnpay_payment(&app).await;
        app.get(&format!("/callbacks/vnpay?{}", vnpay_ipn(&merchant_ref, amount)), None).await;
    }
    let auditor = app.token(Role::Auditor).await;
    let r = app.get("/v1/ledger/verify", Some(&auditor)).await;
    assert_eq!((r.body["ok"].clone(), r.body["sealed"].clone()), (json!(true), json!(6)), "{}", r.text);
    (app, auditor)
}

#[tokio::test]
async fn verify_names_the_first_row_a_superuser_altered() {
    let (app, auditor) = three_payments_sealed().await;
    let target: i64 = app.scalar("SELECT transfer_id FROM ledger_seals WHERE seq = 4").await;

    // Someone with the keys to the database bypasses the guards and edits one amount.
    alter_as_superuser(&app, &format!("UPDATE ledger_transfers SET amount = amount - 1 WHERE id = {target}")).await;
    let r = app.get("/v1/ledger/verify", Some(&auditor)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["ok"], false, "{}", r.text);
    assert_eq!(r.body["first_broken"]["seq"], 4, "{}", r.text);
    assert_eq!(r.body["first_broken"]["transfer_id"], target);
    assert_eq!(r.body["head_seq"], 3, "the head is the last link that verified: {}", r.text);

    // The command line says the same and exits 1.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_paygate"))
        .args(["ledger", "verify"])
        .env("PAYGATE_CONFIG_DIR", "/nonexistent")
        .env("PAYGATE_DATABASE__URL", app.db.url())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("seq 4"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Runs `statements` past the ledger's guards, as someone with the keys to the database would:
/// on PostgreSQL with triggers off for the session, on SQLite after dropping the ledger's
/// append-only triggers.
async fn as_superuser(app: &TestApp, statements: &[&str]) {
    if app.db.is_postgres() {
        let mut conn = sqlx::PgConnection::connect(app.db.url()).await.unwrap();
        sqlx::query("SET session_replication_role = replica").execute(&mut conn).await.unwrap();
        for sql in statements {
            sqlx::query(sql).execute(&mut conn).await.unwrap();
        }
    } else {
        let mut conn = sqlx::SqliteConnection::connect(app.db.url()).await.unwrap();
        for table in ["ledger_accounts", "ledger_transactions", "ledger_transfers", "ledger_seals"] {
            for guard in ["no_update", "no_delete"] {
                sqlx::query(&format!("DROP TRIGGER IF EXISTS {table}_{guard}")).execute(&mut conn).await.unwrap();
            }
        }
        for sql in statements {
            sqlx::query(sql).execute(&mut conn).await.unwrap();
        }
    }
}

async fn alter_as_superuser(app: &TestApp, sql: &str) {
    as_superuser(app, &[sql]).await;
}

#[tokio::test]
async fn an_anchor_kept_outside_the_database_finds_links_cut_from_the_end_of_the_chain() {
    let (app, auditor) = three_payments_sealed().await;
    let r = app.get("/v1/ledger/verify", Some(&auditor)).await;
    assert_eq!((r.body["head_seq"].clone(), r.body["anchor"].clone()), (json!(6), Value::Null), "{}", r.text);
    let head = r.body["head"].as_str().unwrap().to_string();
    let anchor = format!("6:{head}");

    // The chain grows past the anchor, which still holds.
    let (_, _, merchant_ref, amount) = vnpay_payment(&app).await;
    app.get(&format!("/callbacks/vnpay?{}", vnpay_ipn(&merchant_ref, amount)), None).await;
    let r = app.get(&format!("/v1/ledger/verify?anchor={anchor}"), Some(&auditor)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["ok"], true, "{}", r.text);
    assert_eq!(r.body["head_seq"], 8, "{}", r.text);
    assert_eq!(r.body["anchor"], json!({"seq": 6, "hash": head, "held": true, "detail": "seq 6 still has this hash"}));

    // Someone with the keys to the database deletes the last two payments' postings and links.
    as_superuser(
        &app,
        &[
            "DELETE FROM ledger_seals WHERE seq > 4",
            "DELETE FROM ledger_transfers WHERE id NOT IN (SELECT transfer_id FROM ledger_seals)",
            "DELETE FROM ledger_transactions WHERE id NOT IN (SELECT transaction_id FROM ledger_transfers)",
        ],
    )
    .await;
    // What is left is a valid chain: alone, it cannot tell.
    let r = app.get("/v1/ledger/verify", Some(&auditor)).await;
    assert_eq!((r.body["ok"].clone(), r.body["head_seq"].clone()), (json!(true), json!(4)), "{}", r.text);
    // The anchor can.
    let r = app.get(&format!("/v1/ledger/verify?anchor={anchor}"), Some(&auditor)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["ok"], false, "{}", r.text);
    assert_eq!(r.body["first_broken"], Value::Null, "{}", r.text);
    assert_eq!(r.body["anchor"]["held"], false, "{}", r.text);
    assert!(r.body["anchor"]["detail"].as_str().unwrap().contains("the chain ends at seq 4"), "{}", r.text);

    // The command line says the same and exits 1; an earlier anchor still holds.
    let verify = |anchor: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_paygate"))
            .args(["ledger", "verify", "--anchor", anchor])
            .env("PAYGATE_CONFIG_DIR", "/nonexistent")
            .env("PAYGATE_DATABASE__URL", app.db.url())
            .output()
            .unwrap()
    };
    let out = verify(&anchor);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the anchor at seq 6 does not hold: the chain ends at seq 4"), "{stderr}");
    let r = app.get("/v1/ledger/verify", Some(&auditor)).await;
    let earlier = format!("4:{}", r.body["head"].as_str().unwrap());
    let out = verify(&earlier);
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("keep its anchor outside the database to check later: {earlier}")), "{stderr}");

    // A payment sealed after the cut takes seq 5 onward: the anchor's seq now has another hash.
    let (_, _, merchant_ref, amount) = vnpay_payment(&app).await;
    app.get(&format!("/callbacks/vnpay?{}", vnpay_ipn(&merchant_ref, amount)), None).await;
    let r = app.get(&format!("/v1/ledger/verify?anchor={anchor}"), Some(&auditor)).await;
    assert_eq!((r.body["ok"].clone(), r.body["head_seq"].clone()), (json!(false), json!(6)), "{}", r.text);
    assert!(r.body["anchor"]["detail"].as_str().unwrap().contains("rewritten"), "{}", r.text);

    // Anchors that are not SEQ:HASH are refused, before anything is sealed or read.
    for bad in ["6", "0:{head}", "six:{head}", "6:abc", "6:{head}0"] {
        let bad = bad.replace("{head}", &head);
        let r = app.get(&format!("/v1/ledger/verify?anchor={bad}"), Some(&auditor)).await;
        r.assert_problem(422, "validation-error");
        assert_eq!(r.body["errors"][0]["field"], "anchor", "{bad}: {}", r.text);
    }
    let out = verify("6:abc");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("HASH must be 64 hexadecimal digits"));
}

#[tokio::test]
async fn verify_finds_a_rewritten_memo_or_posting_time() {
    let (app, auditor) = three_payments_sealed().await;
    // The ledger transaction of the transfer sealed at `seq`, and the first seq of its transfers.
    let transaction_at = |seq: i64| {
        format!(
            "(SELECT transaction_id FROM ledger_transfers WHERE id = (SELECT transfer_id FROM ledger_seals WHERE seq = {seq}))"
        )
    };
    let first_seq_of = |transaction: &str| {
        format!(
            "SELECT MIN(s.seq) FROM ledger_seals s JOIN ledger_transfers t ON t.id = s.transfer_id \
             WHERE t.transaction_id = {transaction}"
        )
    };
    let (late, early) = (transaction_at(6), transaction_at(1));
    let late_first = app.scalar(&first_seq_of(&late)).await;
    assert!(late_first > 1, "the last payment's transfers come after the first's");

    // What the entry says it was for.
    alter_as_superuser(&app, &format!("UPDATE ledger_transactions SET memo = 'refund to the payer' WHERE id = {late}"))
        .await;
    let r = app.get("/v1/ledger/verify", Some(&auditor)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["ok"], false, "{}", r.text);
    assert_eq!(r.body["first_broken"]["seq"], late_first, "{}", r.text);

    // When an earlier one was posted: verify now names that one.
    let an_hour_earlier = if app.db.is_postgres() {
        format!("UPDATE ledger_transactions SET created_at = created_at - INTERVAL '1 hour' WHERE id = {early}")
    } else {
        format!(
            "UPDATE ledger_transactions SET created_at = strftime('%Y-%m-%dT%H:%M:%fZ', created_at, '-1 hour') WHERE id = {early}"
        )
    };
    alter_as_superuser(&app, &an_hour_earlier).await;
    let r = app.get("/v1/ledger/verify", Some(&auditor)).await;
    assert_eq!(r.body["ok"], false, "{}", r.text);
    assert_eq!(r.body["first_broken"]["seq"], 1, "{}", r.text);
}

#[tokio::test]
async fn staff_read_balances_entries_and_the_inbox() {
    let app = TestApp::spawn().await;
    let (code, id, merchant_ref, amount) = vnpay_payment(&app).await;
    app.get(&format!("/callbacks/vnpay?{}", vnpay_ipn(&merchant_ref, amount)), None).await;
    let treasurer = app.token(Role::Treasurer).await;
    let auditor = app.token(Role::Auditor).await;
    let issuer = app.token(Role::Issuer).await;

    app.get("/v1/ledger/accounts", Some(&issuer)).await.assert_problem(403, "forbidden");
    let r = app.get("/v1/ledger/accounts", Some(&treasurer)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let balance = |name: &str| {
        r.body.as_array().unwrap().iter().find(|a| a["account"] == name).map(|a| a["balance"].as_i64().unwrap())
    };
    assert_eq!(balance("provider_clearing:vnpay"), Some(amount));
    // 10 m²: registration fee 1,250,000 (757-2801) and PIT 5,000,000 (757-1006), owed to the treasury.
    assert_eq!(balance("treasury_payable:757-2801"), Some(-1_250_000));
    assert_eq!(balance("treasury_payable:757-1006"), Some(-5_000_000));

    let r = app.get(&format!("/v1/ledger/entries?payment_id={id}"), Some(&auditor)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let entries = r.body["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert!(entries.iter().all(|e| e["notice_code"] == code.as_str() && e["kind"] == "payment_confirmed"));
    let r = app.get("/v1/ledger/entries?account=treasury_payable:757-2801&limit=1", Some(&auditor)).await;
    assert_eq!(r.body["entries"].as_array().unwrap().len(), 1);
    let cursor = r.body["next_cursor"].as_i64().unwrap();
    let r = app
        .get(&format!("/v1/ledger/entries?account=treasury_payable:757-2801&limit=1&cursor={cursor}"), Some(&auditor))
        .await;
    assert_eq!(r.body["entries"].as_array().unwrap().len(), 0);
    app.get("/v1/ledger/entries?limit=0", Some(&auditor)).await.assert_problem(422, "validation-error");

    app.get("/v1/inbox", Some(&treasurer)).await.assert_problem(403, "forbidden");
    let r = app.get("/v1/inbox?provider=vnpay", Some(&auditor)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let first = &r.body["callbacks"][0];
    assert_eq!(first["verification"], "verified");
    assert_eq!(first["outcome"], "applied:succeeded");
    assert_eq!(first["merchant_ref"], merchant_ref.as_str());
    let one = app.get(&format!("/v1/inbox/{}", first["id"].as_str().unwrap()), Some(&auditor)).await;
    assert!(one.body["query"].as_str().unwrap().contains("vnp_SecureHash"));
    app.assert_ledger_invariants().await;
}

/// Bad callbacks are refused as their protocol expects, kept in the inbox as rejected, and move
/// no money.
#[tokio::test]
async fn hostile_callbacks_are_refused_stored_and_move_nothing() {
    let app = TestApp::spawn().await;
    let (code, _, merchant_ref, amount) = vnpay_payment(&app).await;
    let good = vnpay_ipn(&merchant_ref, amount);
    // Signed as VNPAY would sign them, so each is refused for what it is, not for its signature.
    let decimal = vnpay_ipn_for_amount(&merchant_ref, &format!("{}.00", amount * 100));
    let plus = vnpay_ipn_for_amount(&merchant_ref, &format!("+{}", amount * 100));
    let cases = [
        (format!("{good}&vnp_Amount=100"), "97"),
        (good.split("&vnp_SecureHash=").next().unwrap().to_string() + "&vnp_SecureHash=abcd", "97"),
        (decimal, "04"),
        (plus, "04"),
    ];
    for (q, rsp_code) in cases {
        let r = app.get(&format!("/callbacks/vnpay?{q}"), None).await;
        assert_eq!(r.body["RspCode"], rsp_code, "{q}: {}", r.text);
    }
    // A correctly signed IPN carrying bytes that are not UTF-8 (in an unsigned field) is refused,
    // not read with replacement characters: escaped in the query, raw in a form body.
    let r = app.get(&format!("/callbacks/vnpay?{good}&note=%FF%FE"), None).await;
    assert_eq!(r.body["RspCode"], "99", "{}", r.text);
    let mut form = format!("{good}&note=").into_bytes();
    form.extend_from_slice(&[0xff, 0xfe]);
    let post = app.client.post(app.url("/callbacks/vnpay")).header("content-type", "application/x-www-form-urlencoded");
    let r = app.send(post.body(form)).await;
    assert_eq!(r.body["RspCode"], "99", "{}", r.text);
    let ten_mb = vec![b'a'; 10 * 1024 * 1024];
    let r = app.send(app.client.post(app.url("/callbacks/momo")).body(ten_mb)).await;
    r.assert_problem(400, "callback-rejected");
    let r = app.send(app.client.post(app.url("/callbacks/zalopay")).body(vec![0xff, 0xfe, 0x00, 0x80])).await;
    assert_eq!(r.body["return_code"], -1);
    let bomb = "[".repeat(100_000) + &"]".repeat(100_000);
    let r = app.send(app.client.post(app.url("/callbacks/momo")).body(bomb)).await;
    r.assert_problem(400, "callback-rejected");

    let auditor = app.token(Role::Auditor).await;
    let r = app.get("/v1/inbox?limit=500", Some(&auditor)).await;
    let callbacks = r.body["callbacks"].as_array().unwrap();
    assert_eq!(callbacks.len(), 9);
    assert!(callbacks.iter().all(|c| c["verification"] == "rejected"), "{}", r.text);
    assert!(callbacks.iter().any(|c| c["body_bytes"] == 10 * 1024 * 1024));
    assert_eq!(app.notice(&code).await["status"], "unpaid");
    assert_eq!(app.count("ledger_transfers").await, 0, "no money moved");
    app.assert_ledger_invariants().await;
}

/// A receiver of our webhooks: records what it gets; answers 500 while `fail` is set.
async fn receiver() -> (String, Arc<Mutex<Vec<(String, String)>>>, Arc<Mutex<bool>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let fail = Arc::new(Mutex::new(false));
    let (g, f) = (got.clone(), fail.clone());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let (g, f) = (g.clone(), f.clone());
            async move {
                if *f.lock().unwrap() {
                    return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                }
                let sig = headers.get("paygate-signature").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                g.lock().unwrap().push((sig, body));
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got, fail)
}

const DOSSIER_SECRET: &str = "dossier-webhook-secret-0001";

/// A service whose events go to one endpoint, `dossier` at `url`; its background rounds stay out
/// of the way (the test runs them).
async fn app_notifying(url: &str) -> TestApp {
    app_notifying_with(url, |_| {}).await
}

async fn app_notifying_with(url: &str, adjust: impl FnOnce(&mut paygate::config::Config)) -> TestApp {
    TestApp::spawn_with(|c| {
        c.webhooks.endpoints = vec![paygate::config::WebhookEndpoint {
            name: "dossier".into(),
            url: url.to_string(),
            secret: secrecy::SecretString::from(DOSSIER_SECRET.to_string()),
        }];
        c.providers.status_poll_interval_secs = 3600;
        adjust(c);
    })
    .await
}

#[tokio::test]
async fn deliveries_to_an_endpoint_no_longer_configured_do_not_crowd_out_the_others() {
    let (url, got, _) = receiver().await;
    let app = app_notifying(&url).await;
    let (_, _, merchant_ref, amount) = vnpay_payment(&app).await;
    app.get(&format!("/callbacks/vnpay?{}", vnpay_ipn(&merchant_ref, amount)), None).await;
    // Deliveries planned for an endpoint since removed from the configuration, due first.
    let earlier = chrono::Utc::now() - chrono::Duration::hours(1);
    assert_eq!(app.store.plan_deliveries(&["treasury-old".to_string()], earlier, "").await.unwrap(), 1);

    let http = reqwest::Client::new();
    let r = paygate::webhooks::deliver_once(&app.state, &http, chrono::Utc::now(), Planning::Everything).await.unwrap();
    assert_eq!((r.attempted, r.delivered), (1, 1), "only the configured endpoint's delivery is claimed");
    assert_eq!(got.lock().unwrap().len(), 1);
    let sql = "SELECT attempts FROM webhook_deliveries WHERE endpoint = 'treasury-old'";
    assert_eq!(app.scalar(sql).await, 0, "the orphan is left as it was, for an admin to see");
}

#[tokio::test]
async fn events_are_signed_ordered_retried_and_resendable() {
    let (url, got, fail) = receiver().await;
    let secret = DOSSIER_SECRET;
    let app = app_notifying(&url).await;
    let http = reqwest::Client::new();
    let (code, id, merchant_ref, amount) = vnpay_payment(&app).await;
    app.get(&format!("/callbacks/vnpay?{}", vnpay_ipn(&merchant_ref, amount)), None).await;

    // The receiver is down: the attempt fails and is retried later.
    *fail.lock().unwrap() = true;
    let now = chrono::Utc::now();
    let r = paygate::webhooks::deliver_once(&app.state, &http, now, Planning::Everything).await.unwrap();
    assert_eq!((r.attempted, r.failed), (1, 1));
    let r = paygate::webhooks::deliver_once(&app.state, &http, now, Planning::Everything).await.unwrap();
    assert_eq!(r.attempted, 0, "not before its backoff");
    *fail.lock().unwrap() = false;
    let r =
        paygate::webhooks::deliver_once(&app.state, &http, now + chrono::Duration::seconds(10), Planning::Everything)
            .await
            .unwrap();
    assert_eq!(r.delivered, 1);

    let received = got.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    let (sig, body) = &received[0];
    let secrets = [secrecy::SecretString::from(secret.to_string())];
    paygate::providers::protocol::signature::verify(
        sig,
        body.as_bytes(),
        &secrets,
        chrono::Utc::now().timestamp(),
        300,
    )
    .expect("signed with our secret");
    let event: Value = serde_json::from_str(body).unwrap();
    assert_eq!(event["type"], "notice.paid");
    assert_eq!(event["notice_code"], code.as_str());
    assert_eq!(event["sequence"], 1);
    assert_eq!(event["payment_id"], id.as_str());

    // An admin re-sends it.
    let admin = app.token(Role::Admin).await;
    let auditor = app.token(Role::Auditor).await;
    let events = app.get(&format!("/v1/events?notice_code={code}"), Some(&auditor)).await;
    assert_eq!(events.body[0]["deliveries"][0]["status"], "delivered", "{}", events.text);
    let event_id = events.body[0]["id"].as_str().unwrap();
    let path = format!("/v1/events/{event_id}/resend");
    app.post_json(&path, &json!({}), Some(&auditor), None).await.assert_problem(403, "forbidden");
    assert_eq!(app.post_json(&path, &json!({}), Some(&admin), None).await.status, 202);
    let r = paygate::webhooks::deliver_once(&app.state, &http, chrono::Utc::now(), Planning::Everything).await.unwrap();
    assert_eq!(r.delivered, 1);
    assert_eq!(got.lock().unwrap().len(), 2);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn a_round_sends_every_delivery_due_and_ordinary_rounds_plan_only_recent_events() {
    let (url, got, _) = receiver().await;
    let app = app_notifying(&url).await;
    // More events than one batch of deliveries.
    for _ in 0..20 {
        let (_, _, merchant_ref, amount) = vnpay_payment(&app).await;
        app.get(&format!("/callbacks/vnpay?{}", vnpay_ipn(&merchant_ref, amount)), None).await;
    }
    let http = reqwest::Client::new();
    // An hour on, an ordinary round looks back only ten minutes: these events are older.
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    let r = paygate::webhooks::deliver_once(&app.state, &http, later, Planning::Recent).await.unwrap();
    assert_eq!(r.attempted, 0, "events older than the lookback are left to a full round");
    assert_eq!(app.scalar("SELECT COUNT(*) FROM webhook_deliveries").await, 0);
    // Now, an ordinary round plans them all and sends them all, batch after batch.
    let r = paygate::webhooks::deliver_once(&app.state, &http, chrono::Utc::now(), Planning::Recent).await.unwrap();
    assert_eq!((r.attempted, r.delivered, r.failed), (20, 20, 0));
    assert_eq!(got.lock().unwrap().len(), 20);
    let r = paygate::webhooks::deliver_once(&app.state, &http, chrono::Utc::now(), Planning::Everything).await.unwrap();
    assert_eq!(r.attempted, 0, "each event is delivered once");
    assert_eq!(app.scalar("SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'delivered'").await, 20);
    app.assert_ledger_invariants().await;
}

/// A receiver that is down: a round attempts each delivery due once and ends, however short the
/// backoff, and the next round, once the backoff has passed, attempts them again.
#[tokio::test]
async fn a_round_against_a_receiver_that_is_down_attempts_each_delivery_once_and_ends() {
    let (url, got, fail) = receiver().await;
    let app = app_notifying_with(&url, |c| c.webhooks.max_backoff_secs = 0).await;
    for _ in 0..20 {
        let (_, _, merchant_ref, amount) = vnpay_payment(&app).await;
        app.get(&format!("/callbacks/vnpay?{}", vnpay_ipn(&merchant_ref, amount)), None).await;
    }
    *fail.lock().unwrap() = true;
    let http = reqwest::Client::new();
    let now = chrono::Utc::now();
    let r = paygate::webhooks::deliver_once(&app.state, &http, now, Planning::Everything).await.unwrap();
    assert_eq!((r.attempted, r.failed), (20, 20), "each once, however short the backoff");
    assert_eq!(app.scalar("SELECT MAX(attempts) FROM webhook_deliveries").await, 1);
    *fail.lock().unwrap() = false;
    let later = now + chrono::Duration::seconds(60);
    let r = paygate::webhooks::deliver_once(&app.state, &http, later, Planning::Recent).await.unwrap();
    assert_eq!((r.attempted, r.delivered), (20, 20));
    assert_eq!(got.lock().unwrap().len(), 20);
}

/// A verified report that changes nothing ("not completed") is answered as taken only once it is
/// in the inbox: with the database gone, VNPAY is asked to send it again.
#[tokio::test]
async fn a_report_that_changes_nothing_is_answered_as_taken_only_once_kept() {
    let app = TestApp::spawn().await;
    let (_, _, merchant_ref, amount) = vnpay_payment(&app).await;
    let ipn = format!("/callbacks/vnpay?{}", vnpay_ipn_reporting(&merchant_ref, &(amount * 100).to_string(), "01"));
    let r = app.get(&ipn, None).await;
    assert_eq!(r.body["RspCode"], "00", "{}", r.text);
    let sql = format!(
        "SELECT COUNT(*) FROM callback_inbox WHERE merchant_ref = '{merchant_ref}' AND outcome = 'pending_reported'"
    );
    assert_eq!(app.scalar(&sql).await, 1);
    app.store.close().await;
    let r = app.get(&ipn, None).await;
    assert_eq!(r.body["RspCode"], "99", "not kept, so not confirmed: {}", r.text);
}

/// An Idempotency-Key header does not take a callback past the inbox: every delivery is stored and
/// answered as its provider's protocol expects, however large.
#[tokio::test]
async fn an_idempotency_key_does_not_take_a_callback_past_the_inbox() {
    let app = TestApp::spawn().await;
    let momo = || app.client.post(app.url("/callbacks/momo"));
    for _ in 0..2 {
        let r = app.send(momo().header("idempotency-key", "same-key").body("{}")).await;
        r.assert_problem(400, "callback-rejected");
        assert!(r.headers.get("idempotent-replayed").is_none());
    }
    // Larger than the API's body limit, which the idempotency layer would apply.
    let r = app.send(momo().header("idempotency-key", "big").body(vec![b'a'; 2 * 1024 * 1024])).await;
    r.assert_problem(400, "callback-rejected");
    assert_eq!(app.count("callback_inbox").await, 3);
}

/// Paging in chain order gives every sealed transfer once, by seq, and the next page's cursor is a seq.
#[tokio::test]
async fn entries_page_in_chain_order_by_seq() {
    let app = TestApp::spawn().await;
    for _ in 0..3 {
        let (_, _, merchant_ref, amount) = vnpay_payment(&app).await;
        let r = app.get(&format!("/callbacks/vnpay?{}", vnpay_ipn(&merchant_ref, amount)), None).await;
        assert_eq!(r.body["RspCode"], "00", "{}", r.text);
    }
    let auditor = app.token(Role::Auditor).await;
    let r = app.get("/v1/ledger/verify", Some(&auditor)).await;
    assert_eq!((r.body["ok"].as_bool(), r.body["unsealed"].as_i64()), (Some(true), Some(0)), "{}", r.text);
    let (mut seqs, mut after) = (Vec::new(), Some(0));
    while let Some(a) = after {
        let r = app.get(&format!("/v1/ledger/entries?sealed_after={a}&limit=2"), Some(&auditor)).await;
        assert_eq!(r.status, 200, "{}", r.text);
        seqs.extend(r.body["entries"].as_array().unwrap().iter().map(|e| e["seq"].as_i64().unwrap()));
        after = r.body["next_cursor"].as_i64();
    }
    let transfers = app.count("ledger_transfers").await;
    assert_eq!(seqs, (1..=transfers).collect::<Vec<_>>(), "every sealed transfer once, in seq order");
    app.get("/v1/ledger/entries?sealed_after=0&cursor=1", Some(&auditor)).await.assert_problem(422, "validation-error");
}

/// The inbox keeps a form's or a query's amounts and references as sent, and masks a citizen's
/// identifier written in its free text.
#[tokio::test]
async fn the_inbox_masks_identifiers_in_forms_and_queries_but_keeps_amounts() {
    let app = TestApp::spawn().await;
    let fields = "vnp_Amount=1000000000&vnp_OrderInfo=Nop+thue+CCCD+079123456789&vnp_TxnRef=PG1&vnp_SecureHash=00";
    let r = app.get(&format!("/callbacks/vnpay?{fields}"), None).await;
    assert_eq!(r.body["RspCode"], "97", "{}", r.text);
    let post = app.client.post(app.url("/callbacks/vnpay")).header("content-type", "application/x-www-form-urlencoded");
    let r = app.send(post.body(fields)).await;
    assert_eq!(r.body["RspCode"], "97", "{}", r.text);
    let auditor = app.token(Role::Auditor).await;
    let r = app.get("/v1/inbox?limit=10", Some(&auditor)).await;
    let kept = r.body["callbacks"].as_array().unwrap();
    assert_eq!(kept.len(), 2, "{}", r.text);
    for c in kept {
        let stored = format!("{} {}", c["query"].as_str().unwrap_or(""), c["body"].as_str().unwrap_or(""));
        assert!(stored.contains("vnp_Amount=1000000000"), "the amount as sent: {stored}");
        assert!(stored.contains("CCCD+********6789"), "the identifier masked: {stored}");
        assert!(!stored.contains("079123456789"), "{stored}");
    }
}

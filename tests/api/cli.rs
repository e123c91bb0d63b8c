//! The binary: configuration errors, token management.

use crate::helpers::{JsonServe, TestDb, paygate};

#[tokio::test]
async fn a_bad_configuration_value_exits_2_naming_the_key() {
    let db = TestDb::fresh().await;
    let out = paygate(&db).env("PAYGATE_SERVER__BIND", "not-an-address").arg("serve").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("server.bind") && err.contains("PAYGATE_SERVER__BIND"), "{err}");

    let out = paygate(&db).env("PAYGATE_DATABASE__URL", "mysql://root:hunter2@db/x").arg("serve").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("database.url"), "{err}");
    assert!(!err.contains("hunter2"), "the secret is never printed: {err}");

    // Without the sandbox, providers need real endpoints and real secrets.
    let out = paygate(&db).env("PAYGATE_SANDBOX__ENABLED", "false").arg("serve").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("providers.vnpay.base_url"));
    let out = paygate(&db)
        .env("PAYGATE_SANDBOX__ENABLED", "false")
        .env("PAYGATE_PROVIDERS__ENABLED", "[vnpay]")
        .env("PAYGATE_PROVIDERS__VNPAY__BASE_URL", "https://pay.vnpay.vn")
        .arg("serve")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("providers.vnpay.hash_secret") && !err.contains("sandbox-vnpay"), "{err}");

    let out = paygate(&db).env("PAYGATE_TELEMETRY__LOG_FORMAT", "xml").arg("migrate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("telemetry.log_format"));
}

#[tokio::test]
async fn secrets_can_come_from_files() {
    let db = TestDb::fresh().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("db-url");
    std::fs::write(&file, format!("{}\n", db.url())).unwrap();
    let out = paygate(&db)
        .env_remove("PAYGATE_DATABASE__URL")
        .env("PAYGATE_DATABASE__URL_FILE", &file)
        .arg("migrate")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let out =
        paygate(&db).env("PAYGATE_DATABASE__URL_FILE", dir.path().join("missing")).arg("migrate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("database.url"));
}

#[tokio::test]
async fn token_create_prints_the_token_last_and_revoke_disables_it() {
    let db = TestDb::fresh().await;
    let out = paygate(&db).args(["token", "create", "--role", "issuer", "--name", "dossier-system"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let token = stdout.lines().last().unwrap();
    assert!(token.starts_with("pgt_"), "{stdout}");

    let out = paygate(&db).args(["token", "list"]).output().unwrap();
    let listing = String::from_utf8(out.stdout).unwrap();
    assert!(listing.contains("dossier-system") && listing.contains("issuer") && listing.contains("active"));
    assert!(!listing.contains(&token[17..]), "secrets are never listed");

    let out = paygate(&db).args(["token", "revoke", "dossier-system"]).output().unwrap();
    assert!(out.status.success());
    let out = paygate(&db).args(["token", "list"]).output().unwrap();
    assert!(String::from_utf8(out.stdout).unwrap().contains("revoked"));
    let out = paygate(&db).args(["token", "revoke", "dossier-system"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));

    let out = paygate(&db).args(["token", "create", "--role", "king", "--name", "x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "clap usage errors exit 2");
}

#[tokio::test]
async fn the_example_production_configuration_is_valid_once_its_secrets_are_given() {
    let db = TestDb::fresh().await;
    let dir = tempfile::tempdir().unwrap();
    let bank_secrets = dir.path().join("vcb-secrets");
    std::fs::write(&bank_secrets, "real-bank-secret-00001\nreal-bank-secret-00002-next\n").unwrap();
    let out = paygate(&db)
        .env("PAYGATE_CONFIG_DIR", "deploy")
        .env("PAYGATE_ENV", "production")
        .env("PAYGATE_PROVIDERS__VNPAY__TMN_CODE", "REALTMN1")
        .env("PAYGATE_PROVIDERS__VNPAY__HASH_SECRET", "real-vnpay-secret-0001")
        .env("PAYGATE_PROVIDERS__MOMO__SECRET_KEY", "real-momo-secret-0001")
        .env("PAYGATE_PROVIDERS__ZALOPAY__KEY1", "real-zalopay-key1")
        .env("PAYGATE_PROVIDERS__ZALOPAY__KEY2", "real-zalopay-key2")
        .env("PAYGATE_PROVIDERS__VIETQR__BANK", "vcb")
        .env("PAYGATE_PROVIDERS__BANKS__VCB__SECRETS_FILE", &bank_secrets)
        .arg("migrate")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Forgetting the partner bank leaves VietQR without anyone to confirm transfers.
    let out = paygate(&db)
        .env("PAYGATE_CONFIG_DIR", "deploy")
        .env("PAYGATE_ENV", "production")
        .env("PAYGATE_PROVIDERS__VNPAY__HASH_SECRET", "real-vnpay-secret-0001")
        .env("PAYGATE_PROVIDERS__MOMO__SECRET_KEY", "real-momo-secret-0001")
        .env("PAYGATE_PROVIDERS__ZALOPAY__KEY1", "real-zalopay-key1")
        .env("PAYGATE_PROVIDERS__ZALOPAY__KEY2", "real-zalopay-key2")
        .arg("migrate")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("providers.vietqr.bank"));
}

/// `paygate serve` starts even when the trace collector is down, and SIGTERM stops it cleanly.
#[tokio::test]
async fn serve_starts_with_the_collector_down_and_stops_on_sigterm() {
    let db = TestDb::fresh().await;
    let mut cmd = paygate(&db);
    cmd.env("PAYGATE_TELEMETRY__OTLP_ENDPOINT", "http://127.0.0.1:9/v1/traces");
    let serve = JsonServe::start(cmd);
    let address = serve.address();
    let health = reqwest::get(format!("http://{address}/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    serve.sigterm();
    let status = serve.exit().await;
    assert!(status.success(), "{status:?}");
}

/// A SIGTERM sent the moment `serve` says it is listening stops it gracefully (exit 0), never by
/// the signal's default action: the handlers are installed before the line is written.
#[tokio::test]
async fn sigterm_right_after_listening_is_a_graceful_stop() {
    let db = TestDb::fresh().await;
    let serve = JsonServe::start(paygate(&db));
    assert!(serve.wait_for("paygate listening").is_some(), "serve did not say it listens");
    serve.sigterm();
    assert!(serve.wait_for("\"stopped\"").is_some(), "serve did not log a graceful stop");
    let status = serve.exit().await;
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn reconcile_reads_a_file_once_and_refuses_another_providers_file_whole() {
    let db = TestDb::fresh().await;
    let dir = tempfile::tempdir().unwrap();
    let vnpay = dir.path().join("vnpay_PGSANDBX_20261126.csv");
    let header =
        "TmnCode,TransactionNo,TxnRef,TransactionType,Amount,Fee,BankCode,PayDate,OriginalTransactionNo,Status";
    std::fs::write(
        &vnpay,
        format!("{header}\r\nPGSANDBX,14000001,NOSUCHREF,01,625000000,165000,NCB,26/11/2026 10:00:00,,Thanh cong\r\n"),
    )
    .unwrap();
    let reconcile = |file: &std::path::Path| {
        paygate(&db).args(["reconcile", "--provider", "vnpay", "--date", "2026-11-26"]).arg(file).output().unwrap()
    };
    let out = reconcile(&vnpay);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let run_id = printed["run"]["id"].as_str().unwrap().to_string();
    assert_eq!(printed["run"]["rows_total"], 1);
    assert_eq!(printed["discrepancies"][0]["class"], "missing_in_gateway");
    assert!(printed["run"]["created_by"].as_str().unwrap().starts_with("cli:"));
    let again = reconcile(&vnpay);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("reconciled before"));
    let printed: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(printed["run"]["id"], run_id.as_str());

    let header_only = dir.path().join("empty_day.csv");
    std::fs::write(&header_only, format!("{header}\r\n")).unwrap();
    let out = reconcile(&header_only);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no data rows"));

    let momo = dir.path().join("momo.csv");
    std::fs::write(&momo, "partnerCode,transId,orderId,requestId,transType,amount,fee,payType,transTime,originalTransId,originalOrderId,status\r\n").unwrap();
    let out = reconcile(&momo);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nothing written") && err.contains("TransactionNo"), "{err}");
}

#[tokio::test]
async fn the_callback_benchmark_confirms_each_payment_once_and_its_checks_pass() {
    // A small run of the README's command on this suite's backend: duplicates race, the report's
    // checks (exactly once, the chain verifies) must pass and the summary must say so.
    let db = TestDb::fresh().await;
    let mut cmd = paygate(&db);
    cmd.args(["bench", "--payments", "40", "--deliveries", "2", "--concurrency", "8"]);
    match std::env::var("PAYGATE_TEST_DATABASE_URL") {
        Ok(admin) if db.is_postgres() => cmd.args(["--backend", "postgres", "--database-url", &admin]),
        _ => cmd.args(["--backend", "sqlite"]),
    };
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["payments"], 40);
    assert_eq!(summary["errors"], 0, "{stdout}");
    assert_eq!(summary["exactly_once"], true, "{stdout}");
    assert_eq!(summary["ledger_verified"], true, "{stdout}");
    assert!(stdout.contains("00 × 40, 02 × 40"), "one confirmation and one duplicate answer per payment: {stdout}");
}

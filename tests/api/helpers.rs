#![allow(dead_code)]
//! Test harness: the real service on port 0 with a fresh database per test.
//!
//! SQLite by default (a file in a temporary folder); PostgreSQL when
//! `PAYGATE_TEST_DATABASE_URL` is set (a new database per test, dropped afterwards).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use paygate::app::Application;
use paygate::auth::{Role, new_token};
use paygate::config::Config;
use paygate::store::Store;
use reqwest::header::HeaderMap;
use secrecy::SecretString;
use serde_json::Value;
use sqlx::Connection;

pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub store: Store,
    pub state: paygate::app::AppState,
    pub db: TestDb,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

pub enum TestDb {
    Sqlite {
        dir: tempfile::TempDir,
        url: String,
    },
    Postgres {
        admin_url: String,
        name: String,
        url: String,
    },
    /// Another app's database (a second process on the same database); not dropped by this one.
    Shared {
        url: String,
        postgres: bool,
    },
}

/// A response read whole: status, headers, body as JSON (Null if not JSON).
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts this is a problem+json of the given status and slug, and returns it.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, slug: &str) -> &Value {
        assert_eq!(self.status, status, "status; body: {}", self.text);
        assert_eq!(self.header("content-type"), Some("application/problem+json"), "content type; body: {}", self.text);
        assert_eq!(self.body["type"], format!("urn:paygate:problem:{slug}"), "type; body: {}", self.text);
        assert_eq!(self.body["status"], status);
        assert!(self.body["title"].as_str().is_some_and(|t| !t.is_empty()));
        assert!(self.body["detail"].as_str().is_some_and(|t| !t.is_empty()));
        &self.body
    }
}

impl TestDb {
    pub async fn fresh() -> TestDb {
        match std::env::var("PAYGATE_TEST_DATABASE_URL") {
            Ok(admin_url) if !admin_url.is_empty() => {
                let name = format!("paygate_test_{}", uuid::Uuid::new_v4().simple());
                let mut conn = sqlx::PgConnection::connect(&admin_url)
                    .await
                    .expect("PAYGATE_TEST_DATABASE_URL must reach PostgreSQL");
                sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
                let mut url = reqwest::Url::parse(&admin_url).unwrap();
                url.set_path(&format!("/{name}"));
                TestDb::Postgres { admin_url, name, url: url.to_string() }
            }
            _ => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}/paygate.db", dir.path().display());
                TestDb::Sqlite { dir, url }
            }
        }
    }

    pub fn url(&self) -> &str {
        match self {
            TestDb::Sqlite { url, .. } | TestDb::Postgres { url, .. } | TestDb::Shared { url, .. } => url,
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, TestDb::Postgres { .. } | TestDb::Shared { postgres: true, .. })
    }

    fn shared(&self) -> TestDb {
        TestDb::Shared { url: self.url().to_string(), postgres: self.is_postgres() }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let TestDb::Postgres { admin_url, name, .. } = self {
            let (admin_url, name) = (admin_url.clone(), name.clone());
            // Drop runs outside any runtime we may block; use a thread with its own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(async {
                    if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url).await {
                        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                            .execute(&mut conn)
                            .await;
                    }
                });
            })
            .join();
        }
    }
}

/// The configuration tests run with: defaults, port 0, the given database.
pub fn test_config(db: &TestDb) -> Config {
    let mut config = Config::defaults();
    config.server.bind = "127.0.0.1:0".parse().unwrap();
    config.database.url = SecretString::from(db.url().to_string());
    config.database.max_connections = 5;
    config
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
        let db = TestDb::fresh().await;
        let mut config = test_config(&db);
        adjust(&mut config);
        Self::spawn_on(db, config).await
    }

    pub async fn spawn_on(db: TestDb, config: Config) -> TestApp {
        let app = Application::build(config).await.expect("application builds");
        let addr = app.local_addr();
        let store = app.store().clone();
        let state = app.state();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(app.run_until(async move {
            let _ = rx.await;
        }));
        TestApp {
            addr,
            client: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap(),
            store,
            state,
            db,
            shutdown: Some(tx),
        }
    }

    /// A second instance of the service on the same database, e.g. with other rule tables.
    pub async fn spawn_sibling(&self, adjust: impl FnOnce(&mut Config)) -> TestApp {
        let db = self.db.shared();
        let mut config = test_config(&db);
        adjust(&mut config);
        Self::spawn_on(db, config).await
    }

    /// Rows in `table` (test-only inspection of what was stored).
    pub async fn count(&self, table: &str) -> i64 {
        self.scalar(&format!("SELECT COUNT(*) FROM {table}")).await
    }

    /// One integer from a query (test-only inspection).
    pub async fn scalar(&self, sql: &str) -> i64 {
        let sql = sql.to_string();
        if self.db.is_postgres() {
            let mut c = sqlx::PgConnection::connect(self.db.url()).await.unwrap();
            let v: Option<i64> =
                sqlx::query_scalar(&format!("SELECT CAST(({sql}) AS BIGINT)")).fetch_one(&mut c).await.unwrap();
            v.unwrap_or(0)
        } else {
            let mut c = sqlx::SqliteConnection::connect(self.db.url()).await.unwrap();
            let v: Option<i64> =
                sqlx::query_scalar(&format!("SELECT CAST(({sql}) AS BIGINT)")).fetch_one(&mut c).await.unwrap();
            v.unwrap_or(0)
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Creates a token with `role` directly in the store and returns its bearer string.
    pub async fn token(&self, role: Role) -> String {
        let t = new_token();
        let name = format!("{}-{}", role, &t.id);
        self.store.insert_token(&t, &name, role).await.unwrap();
        t.bearer
    }

    pub async fn get(&self, path: &str, bearer: Option<&str>) -> Reply {
        let mut req = self.client.get(self.url(path));
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        read(req.send().await.expect("request sent")).await
    }

    /// POSTs JSON with an optional bearer and Idempotency-Key.
    pub async fn post_json(&self, path: &str, body: &Value, bearer: Option<&str>, key: Option<&str>) -> Reply {
        let mut req = self.client.post(self.url(path)).json(body);
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        read(req.send().await.expect("request sent")).await
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        read(req.send().await.expect("request sent")).await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub async fn read(resp: reqwest::Response) -> Reply {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply { status, headers, body, text }
}

/// Polls `check` until it returns Some or `deadline` passes.
pub async fn eventually<T, F, Fut>(deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < until, "condition not met within {deadline:?}");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The obligations issue's worked example: 75,000,000 đồng in two lines.
pub fn example_quote() -> Value {
    serde_json::json!({"jurisdiction": "VN-57", "valuation_date": "2026-11-26",
     "parcel": {"area_m2": "120", "land_type": "ODT", "list_price_per_m2": 25000000},
     "items": [{"kind": "registration_fee", "contract_price": 2800000000u64},
               {"kind": "personal_income_tax", "transfer_price": 2800000000u64}]})
}

pub fn vn_today() -> chrono::NaiveDate {
    (chrono::Utc::now() + chrono::Duration::hours(7)).date_naive()
}

impl TestApp {
    /// Issues a 75,000,000 đồng notice due in 30 days and returns its code.
    pub async fn issue_notice(&self) -> String {
        self.issue_notice_for("120", 2_800_000_000).await
    }

    /// Issues a 6,250,000 đồng notice (10 m²: registration fee 1,250,000 + PIT 5,000,000), within
    /// every e-wallet's per-payment limit.
    pub async fn issue_small_notice(&self) -> String {
        self.issue_notice_for("10", 250_000_000).await
    }

    async fn issue_notice_for(&self, area: &str, price: i64) -> String {
        let issuer = self.token(Role::Issuer).await;
        let mut body = example_quote();
        body["parcel"]["area_m2"] = serde_json::json!(area);
        body["items"][0]["contract_price"] = serde_json::json!(price);
        body["items"][1]["transfer_price"] = serde_json::json!(price);
        body["payer"] = serde_json::json!({"name": "Nguyễn Văn An", "identifier": "079123456789"});
        body["dossier_ref"] = serde_json::json!("HS-2026-000123");
        body["due_date"] = serde_json::json!((vn_today() + chrono::Duration::days(30)).to_string());
        let r = self.post_json("/v1/notices", &body, Some(&issuer), None).await;
        assert_eq!(r.status, 201, "{}", r.text);
        r.body["code"].as_str().unwrap().to_string()
    }

    /// Starts a payment of `code` through `provider`.
    pub async fn start_payment(&self, code: &str, provider: &str) -> Reply {
        self.post_json(&format!("/v1/notices/{code}/payments"), &serde_json::json!({"provider": provider}), None, None)
            .await
    }

    /// A partner bank's signed credit notification (the sandbox bank's secret from config/default.toml).
    pub async fn bank_credit(&self, amount: i64, description: &str, transaction_id: &str) -> Reply {
        self.bank_notification(serde_json::json!({
            "event_id": format!("ev-{transaction_id}"), "bank": "sandbox", "account": "0011012345678",
            "amount": amount, "currency": "VND", "description": description,
            "transaction_id": transaction_id, "credited_at": "2026-11-26T10:00:00+07:00"
        }))
        .await
    }

    /// Sends `body` as a notification of the partner bank `sandbox`, correctly signed.
    pub async fn bank_notification(&self, body: Value) -> Reply {
        let body = body.to_string();
        let secret = secrecy::SecretString::from("sandbox-bank-secret".to_string());
        let header =
            paygate::providers::protocol::signature::sign(&secret, chrono::Utc::now().timestamp(), body.as_bytes());
        self.send(
            self.client
                .post(self.url("/callbacks/bank/sandbox"))
                .header("content-type", "application/json")
                .header("paygate-signature", header)
                .body(body),
        )
        .await
    }

    pub async fn payment(&self, id: &str) -> Value {
        let r = self.get(&format!("/v1/payments/{id}"), None).await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.body
    }

    pub async fn notice(&self, code: &str) -> Value {
        self.get(&format!("/v1/notices/{code}"), None).await.body
    }
}

impl TestApp {
    /// The ledger invariants every money-moving test ends with: the chain verifies with nothing
    /// left unsealed; every confirmed đồng is in the ledger exactly once (money into provider
    /// clearing = succeeded payments + late money); each paid notice's treasury postings equal
    /// what its paying payment collected; overpaid and late money sits in suspense.
    pub async fn assert_ledger_invariants(&self) {
        let auditor = self.token(Role::Auditor).await;
        let r = self.get("/v1/ledger/verify", Some(&auditor)).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.body["ok"], true, "chain: {}", r.text);
        assert_eq!(r.body["unsealed"], 0, "{}", r.text);
        let confirmed = self
            .scalar("SELECT COALESCE(SUM(amount), 0) FROM payments WHERE status IN ('succeeded', 'refunded', 'partially_refunded') OR late_success")
            .await;
        let into_clearing = self
            .scalar(
                "SELECT COALESCE(SUM(t.amount), 0) FROM ledger_transfers t JOIN ledger_transactions x ON x.id = t.transaction_id \
                 WHERE t.debit_account LIKE 'provider_clearing:%' AND x.kind IN ('payment_confirmed', 'suspense')",
            )
            .await;
        assert_eq!(into_clearing, confirmed, "every confirmed đồng is posted exactly once");
        let postings = self.scalar("SELECT COUNT(*) FROM ledger_transactions WHERE kind = 'payment_confirmed'").await;
        let paid = self.scalar("SELECT COUNT(*) FROM notices WHERE status = 'paid'").await;
        assert_eq!(postings, paid, "one confirmation posting per paid notice");
        let mismatched = self
            .scalar(
                "SELECT COUNT(*) FROM notices n JOIN payments p ON p.id = n.paid_by_payment WHERE p.amount <> \
                 (SELECT COALESCE(SUM(t.amount), 0) FROM ledger_transfers t JOIN ledger_transactions x ON x.id = t.transaction_id \
                  WHERE x.notice_code = n.code AND x.kind = 'payment_confirmed' AND t.credit_account LIKE 'treasury_payable:%')",
            )
            .await;
        assert_eq!(mismatched, 0, "ledger totals per notice equal what the notice says was paid");
        let held = self.scalar("SELECT COALESCE(SUM(refund_due), 0) FROM payments").await;
        let suspense = self
            .scalar(
                "SELECT COALESCE(SUM(CASE WHEN t.credit_account = 'suspense' THEN t.amount ELSE -t.amount END), 0) \
                 FROM ledger_transfers t JOIN ledger_transactions x ON x.id = t.transaction_id \
                 WHERE (t.credit_account = 'suspense' OR t.debit_account = 'suspense') AND x.kind IN ('suspense', 'refund')",
            )
            .await;
        assert_eq!(suspense, held, "money held for refund sits in suspense");
        let refunded = self.scalar("SELECT COALESCE(SUM(amount), 0) FROM refunds WHERE status = 'succeeded'").await;
        let out_of_clearing = self
            .scalar(
                "SELECT COALESCE(SUM(t.amount), 0) FROM ledger_transfers t JOIN ledger_transactions x ON x.id = t.transaction_id \
                 WHERE t.credit_account LIKE 'provider_clearing:%' AND x.kind = 'refund'",
            )
            .await;
        assert_eq!(out_of_clearing, refunded, "every confirmed refund is posted exactly once");
    }
}

/// A browser that does not follow redirects, so each hop can be checked.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

pub struct Started {
    pub id: String,
    pub merchant_ref: String,
    pub redirect_url: String,
}

pub async fn start(app: &TestApp, code: &str, provider: &str) -> Started {
    let r = app.start_payment(code, provider).await;
    assert_eq!(r.status, 201, "{}", r.text);
    Started {
        id: r.body["id"].as_str().unwrap().into(),
        merchant_ref: r.body["merchant_ref"].as_str().unwrap().into(),
        redirect_url: r.body["redirect_url"].as_str().unwrap().into(),
    }
}

/// Opens the provider's pay page, then approves or declines there (with an optional fault).
/// Returns the provider's answer to the decision (a redirect back to paygate).
pub async fn decide(app: &TestApp, provider: &str, s: &Started, action: &str, fault: Option<&str>) -> Reply {
    let b = browser();
    let page = read(b.get(&s.redirect_url).send().await.unwrap()).await;
    assert_eq!(page.status, 200, "pay page: {}", page.text);
    let (path, mut form) = match provider {
        "vnpay" => ("/sandbox/vnpay/paymentv2/decide".to_string(), vec![("txn_ref", s.merchant_ref.clone())]),
        "momo" => (format!("/sandbox/momo/pay/{}/decide", s.merchant_ref), vec![]),
        "zalopay" => (format!("/sandbox/zalopay/pay/{}/decide", s.merchant_ref), vec![]),
        other => panic!("{other}"),
    };
    form.push(("action", action.to_string()));
    if let Some(f) = fault {
        form.push(("fault", f.to_string()));
    }
    read(b.post(app.url(&path)).form(&form).send().await.unwrap()).await
}

/// Percent-encodes everything but ASCII letters and digits.
pub fn urlencode(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

/// The `paygate` binary on `db`, with no configuration but the built-in defaults.
pub fn paygate(db: &TestDb) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_paygate"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PAYGATE_CONFIG_DIR", "/nonexistent")
        .env("PAYGATE_DATABASE__URL", db.url());
    cmd
}

/// A `paygate serve` child logging JSON, whose stdout lines arrive on a channel.
pub struct JsonServe {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl JsonServe {
    pub fn start(mut cmd: std::process::Command) -> JsonServe {
        use std::io::{BufRead, BufReader};
        let mut child = cmd
            .env("PAYGATE_SERVER__BIND", "127.0.0.1:0")
            .env("PAYGATE_TELEMETRY__LOG_FORMAT", "json")
            .arg("serve")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        JsonServe { child, lines }
    }

    /// The next line containing `what`, within 30 s.
    pub fn wait_for(&self, what: &str) -> Option<String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(what) => return Some(line),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// The address it listens on, from its "paygate listening" line (within 30 s).
    pub fn address(&self) -> String {
        let line = self.wait_for("paygate listening").expect("the service starts");
        let log: serde_json::Value = serde_json::from_str(&line).expect("JSON logs when configured");
        log["fields"]["address"].as_str().expect("the listening line names its address").to_string()
    }

    pub fn sigterm(&self) {
        let killed = std::process::Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(killed.success());
    }

    /// Its exit status, within 30 s.
    pub async fn exit(mut self) -> std::process::ExitStatus {
        let exit = tokio::task::spawn_blocking(move || self.child.wait());
        tokio::time::timeout(std::time::Duration::from_secs(30), exit).await.expect("serve exits").unwrap().unwrap()
    }
}

impl Drop for JsonServe {
    /// A test that fails half-way leaves no service running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

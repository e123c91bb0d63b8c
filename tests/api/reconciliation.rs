//! Reconciliation over HTTP with settlement files the sandbox providers publish: clean days that
//! settle to zero in clearing, every discrepancy class and every resolution action, re-runs and
//! supersession, the treasury export, and files refused whole.

use paygate::auth::Role;
use serde_json::Value;

use crate::helpers::{Reply, TestApp, decide, read, start, vn_today};

const PAYMENT: i64 = 6_250_000;
const VNPAY_FEE: i64 = 1_650;

impl TestApp {
    /// The sandbox's settlement file of `provider` for today (GMT+7).
    async fn settlement_file(&self, provider: &str) -> String {
        let path = match provider {
            "vietqr" => "/sandbox/bank/sandbox/settlement".to_string(),
            p => format!("/sandbox/{p}/settlement"),
        };
        let r = self.get(&format!("{path}?date={}", vn_today()), None).await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.text
    }

    async fn upload(&self, provider: &str, date: &str, file: &str, token: &str) -> Reply {
        self.upload_as(&format!("provider={provider}&settlement_date={date}"), file, token).await
    }

    async fn upload_as(&self, query: &str, file: &str, token: &str) -> Reply {
        let req = self
            .client
            .post(self.url(&format!("/v1/reconciliation/runs?{query}")))
            .bearer_auth(token)
            .header("content-type", "text/csv")
            .body(file.to_string());
        self.send(req).await
    }

    /// Pays a small notice through `provider`'s sandbox page; returns (payment id, notice code).
    async fn paid(&self, provider: &str, fault: Option<&str>) -> (String, String) {
        let code = self.issue_small_notice().await;
        let s = start(self, &code, provider).await;
        decide(self, provider, &s, "approve", fault).await;
        (s.id, code)
    }

    async fn balance(&self, account: &str) -> i64 {
        let auditor = self.token(Role::Auditor).await;
        let r = self.get("/v1/ledger/accounts", Some(&auditor)).await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.body
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["account"] == account)
            .map(|a| a["balance"].as_i64().unwrap())
            .unwrap_or(0)
    }

    async fn discrepancies(&self, run_id: &str, token: &str) -> Vec<Value> {
        let r = self.get(&format!("/v1/reconciliation/runs/{run_id}?limit=500"), Some(token)).await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.body["discrepancies"].as_array().unwrap().clone()
    }

    async fn resolve(&self, id: &str, action: &str, note: &str, token: &str) -> Reply {
        self.post_json(
            &format!("/v1/reconciliation/discrepancies/{id}/resolve"),
            &serde_json::json!({"action": action, "note": note}),
            Some(token),
            None,
        )
        .await
    }
}

impl TestApp {
    /// Runs a statement directly on the database (as its owner); the error text if it fails.
    async fn execute(&self, sql: &str) -> Result<u64, String> {
        use sqlx::Connection;
        if self.db.is_postgres() {
            let mut c = sqlx::PgConnection::connect(self.db.url()).await.unwrap();
            sqlx::query(sql).execute(&mut c).await.map(|r| r.rows_affected()).map_err(|e| e.to_string())
        } else {
            let mut c = sqlx::SqliteConnection::connect(self.db.url()).await.unwrap();
            sqlx::query(sql).execute(&mut c).await.map(|r| r.rows_affected()).map_err(|e| e.to_string())
        }
    }
}

/// The file's lines (header first), without line ends.
fn lines(file: &str) -> Vec<String> {
    file.split("\r\n").filter(|l| !l.is_empty()).map(str::to_string).collect()
}

fn join(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\r\n")).collect()
}

/// The VNPAY file line of the payment with `TxnRef` = `merchant_ref`.
fn line_of(lines: &[String], merchant_ref: &str) -> usize {
    lines.iter().position(|l| l.split(',').nth(2) == Some(merchant_ref)).expect("the payment is in the file")
}

fn set_field(line: &str, index: usize, value: &str) -> String {
    let mut fields: Vec<&str> = line.split(',').collect();
    fields[index] = value;
    fields.join(",")
}

async fn merchant_ref(app: &TestApp, payment_id: &str) -> String {
    let p = app.payment(payment_id).await;
    p["merchant_ref"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_clean_day_settles_clearing_to_zero_and_the_export_ties_to_the_ledger() {
    let app = TestApp::spawn().await;
    let treasurer = app.token(Role::Treasurer).await;
    let today = vn_today().to_string();
    let (vnpay_a, _) = app.paid("vnpay", None).await;
    app.paid("vnpay", None).await;
    // A partial refund of one VNPAY payment: the provider lists it and deducts it from the payout.
    let r = app
        .post_json(
            &format!("/v1/payments/{vnpay_a}/refunds"),
            &serde_json::json!({"amount": 250_000, "reason": "part of the fee was charged twice"}),
            Some(&treasurer),
            None,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["refund"]["status"], "succeeded", "{}", r.text);
    app.paid("momo", None).await;
    app.paid("zalopay", None).await;

    let mut total_payout = 0;
    for (provider, payments, refunds, fee) in
        [("vnpay", 2, 250_000, VNPAY_FEE), ("momo", 1, 0, 1_000), ("zalopay", 1, 0, 1_000)]
    {
        let file = app.settlement_file(provider).await;
        let r = app.upload(provider, &today, &file, &treasurer).await;
        assert_eq!(r.status, 201, "{provider}: {}", r.text);
        let run = &r.body["run"];
        assert_eq!(
            r.header("location"),
            Some(format!("/v1/reconciliation/runs/{}", run["id"].as_str().unwrap()).as_str())
        );
        assert_eq!(r.body["counts"], serde_json::json!([]), "{provider}: no discrepancy: {}", r.text);
        assert_eq!(run["settled_gross"], payments * PAYMENT, "{provider}");
        assert_eq!(run["settled_refunds"], refunds, "{provider}");
        assert_eq!(run["settled_fees"], payments * fee, "{provider}");
        assert_eq!(run["rows_invalid"], 0);
        assert_eq!(app.balance(&format!("provider_clearing:{provider}")).await, 0, "{provider}: fully reconciled");
        total_payout += payments * PAYMENT - refunds - payments * fee;

        // The same file again is the same run, and nothing more is posted.
        let postings = app.count("ledger_transactions").await;
        let again = app.upload(provider, &today, &file, &treasurer).await;
        assert_eq!(again.status, 200, "{}", again.text);
        assert_eq!(again.body["run"]["id"], run["id"]);
        assert_eq!(app.count("ledger_transactions").await, postings);
    }
    assert_eq!(app.balance("treasury_bank").await, total_payout);
    assert_eq!(app.balance("provider_fees").await, 2 * VNPAY_FEE + 2_000);

    // The export: per budget code, what the settled payments owe the treasury — the same figures
    // as the ledger's treasury payable postings of those payments, less the refund.
    let auditor = app.token(Role::Auditor).await;
    let export = app.get(&format!("/v1/exports/treasury?date={today}"), Some(&auditor)).await;
    assert_eq!(export.status, 200, "{}", export.text);
    let lines = export.body["lines"].as_array().unwrap();
    assert_eq!(export.body["total_amount"], 4 * PAYMENT);
    assert_eq!(export.body["total_refunded"], 250_000);
    assert_eq!(export.body["total_net"], 4 * PAYMENT - 250_000);
    for line in lines {
        let account = format!("treasury_payable:{}", line["budget_code"].as_str().unwrap());
        // Everything paid today was settled today, so the payable account is the export's net.
        assert_eq!(-app.balance(&account).await, line["net"].as_i64().unwrap(), "{account}: {line}");
        assert!(!line["kinds"].as_array().unwrap().is_empty(), "{line}");
    }
    let runs_payout: i64 = export.body["runs"].as_array().unwrap().iter().map(|r| r["payout"].as_i64().unwrap()).sum();
    assert_eq!(
        runs_payout,
        app.balance("treasury_bank").await,
        "the runs' payouts are what reached the treasury account"
    );

    let csv = app.get(&format!("/v1/exports/treasury?date={today}&format=csv"), Some(&auditor)).await;
    assert_eq!(csv.status, 200);
    assert_eq!(csv.header("content-type"), Some("text/csv; charset=utf-8"));
    let csv_lines: Vec<&str> = csv.text.lines().collect();
    assert_eq!(csv_lines[0], "settlement_date,budget_code,kinds,payments,amount,refunded,net");
    assert_eq!(csv_lines.len(), lines.len() + 1);
    for line in lines {
        let code = line["budget_code"].as_str().unwrap();
        let row = csv_lines.iter().find(|l| l.split(',').nth(1) == Some(code)).unwrap();
        assert!(row.ends_with(&format!(",{},{},{}", line["amount"], line["refunded"], line["net"])), "{row}");
    }
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn money_no_payment_accounts_for_is_booked_once_when_another_days_file_lists_it_again() {
    let app = TestApp::spawn().await;
    let treasurer = app.token(Role::Treasurer).await;
    let (paid, _) = app.paid("vnpay", None).await;
    let mut file = lines(&app.settlement_file("vnpay").await);
    let row = line_of(&file, &merchant_ref(&app, &paid).await);
    // Money VNPAY collected for an order the gateway never issued; the next day's file lists the
    // same transaction again.
    let stranger = set_field(&set_field(&file[row], 1, "99999902"), 2, "UNKNOWNREF02");
    file.push(stranger.clone());
    let today = vn_today();
    let next_day = today + chrono::Duration::days(1);
    let again = set_field(&stranger, 7, &next_day.format("%d/%m/%Y 10:00:00").to_string());
    let mut found = Vec::new();
    for (date, body) in [(today, join(&file)), (next_day, join(&[file[0].clone(), again]))] {
        let r = app.upload("vnpay", &date.to_string(), &body, &treasurer).await;
        assert_eq!(r.status, 201, "{}", r.text);
        let all = app.discrepancies(r.body["run"]["id"].as_str().unwrap(), &treasurer).await;
        let d = all.into_iter().find(|d| d["provider_txn_id"] == "99999902").expect("the stranger's discrepancy");
        assert_eq!(d["class"], "missing_in_gateway");
        found.push(d["id"].as_str().unwrap().to_string());
    }

    // Both parked at once: the money is booked by one of them; the other is refused and names it.
    let replies = futures::future::join_all(
        found.iter().map(|id| app.resolve(id, "move_to_suspense", "no such order; asked VNPAY", &treasurer)),
    )
    .await;
    let booked: Vec<usize> = (0..2).filter(|&i| replies[i].status == 200).collect();
    assert_eq!(booked.len(), 1, "{:?}", replies.iter().map(|r| &r.text).collect::<Vec<_>>());
    let (done, refused) = (booked[0], 1 - booked[0]);
    let p = replies[refused].assert_problem(409, "transaction-already-booked");
    assert!(p["detail"].as_str().unwrap().contains(&found[done]), "{p}");
    assert_eq!(app.balance("suspense").await, -PAYMENT, "booked once");
    let r = app.resolve(&found[refused], "mark_for_refund", "listed again", &treasurer).await;
    r.assert_problem(409, "transaction-already-booked");
    let r = app.resolve(&found[refused], "accept", "VNPAY listed it twice; booked once", &treasurer).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(app.balance("suspense").await, -PAYMENT);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn every_discrepancy_class_is_found_and_every_action_resolves_with_compensating_entries() {
    let app = TestApp::spawn().await;
    let treasurer = app.token(Role::Treasurer).await;
    let auditor = app.token(Role::Auditor).await;
    let today = vn_today().to_string();
    let (clean, _) = app.paid("vnpay", None).await;
    // The callback is lost: the provider collected, the gateway still waits.
    let (lost, lost_notice) = app.paid("vnpay", Some("drop")).await;
    let (unlisted, _) = app.paid("vnpay", None).await;
    let (bigger, _) = app.paid("vnpay", None).await;
    let (failed, _) = app.paid("vnpay", None).await;
    let (twice, _) = app.paid("vnpay", None).await;
    let (fee, _) = app.paid("vnpay", None).await;
    assert_eq!(app.payment(&lost).await["status"], "pending");

    let mut file = lines(&app.settlement_file("vnpay").await);
    let refs = [&clean, &lost, &unlisted, &bigger, &failed, &twice, &fee];
    let mut by_name = std::collections::HashMap::new();
    for id in refs {
        by_name.insert(id.clone(), merchant_ref(&app, id).await);
    }
    let i = line_of(&file, &by_name[&bigger]);
    file[i] = set_field(&file[i], 4, &((PAYMENT + 10_000) * 100).to_string());
    let i = line_of(&file, &by_name[&failed]);
    file[i] = set_field(&file[i], 9, "That bai");
    let i = line_of(&file, &by_name[&fee]);
    file[i] = set_field(&file[i], 5, "300000");
    let i = line_of(&file, &by_name[&twice]);
    let duplicate = file[i].clone();
    file.push(duplicate);
    // Money the provider collected for an order the gateway never issued.
    let stranger = set_field(&set_field(&file[1], 1, "99999901"), 2, "UNKNOWNREF01");
    file.push(stranger);
    // A row that cannot be read: reported with its line number, the rest reconciled.
    file.push(set_field(&file[1], 4, "\"1,000,000\""));
    let i = line_of(&file, &by_name[&unlisted]);
    file.remove(i);
    let body = join(&file);

    let r = app.upload("vnpay", &today, &body, &treasurer).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let run_id = r.body["run"]["id"].as_str().unwrap().to_string();
    assert_eq!(r.body["run"]["rows_invalid"], 1);
    let errors = r.body["row_errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{}", r.text);
    assert_eq!(errors[0]["line_no"], file.len() as i64, "the last line");
    assert!(errors[0]["reason"].as_str().unwrap().contains("thousands separators"), "{}", errors[0]);
    // Settled by the run: clean, the first listing of `twice`, and `fee` (at the file's fee).
    assert_eq!(r.body["run"]["settled_gross"], 3 * PAYMENT, "{}", r.text);
    assert_eq!(r.body["run"]["settled_fees"], 2 * VNPAY_FEE + 3_000);

    let found = app.discrepancies(&run_id, &treasurer).await;
    let of = |class: &str, payment: Option<&str>| -> Value {
        found
            .iter()
            .find(|d| d["class"] == class && payment.is_none_or(|p| d["target_id"] == p))
            .unwrap_or_else(|| panic!("no {class} for {payment:?} in {found:#?}"))
            .clone()
    };
    assert_eq!(found.len(), 7, "{found:#?}");
    let lost_d = of("missing_in_gateway", Some(&lost));
    assert_eq!(lost_d["ledger_status"], "pending");
    let evidence = &lost_d["evidence"];
    assert_eq!(evidence["file"]["merchant_ref"], by_name[&lost]);
    assert_eq!(evidence["gateway"]["payment_id"], lost);
    let stranger_d =
        found.iter().find(|d| d["class"] == "missing_in_gateway" && d["target_id"].is_null()).unwrap().clone();
    assert_eq!(stranger_d["provider_txn_id"], "99999901");
    let unlisted_d = of("missing_in_file", Some(&unlisted));
    assert_eq!(unlisted_d["line_no"], Value::Null);
    let bigger_d = of("amount_mismatch", Some(&bigger));
    assert_eq!(
        (bigger_d["file_amount"].as_i64(), bigger_d["ledger_amount"].as_i64()),
        (Some(PAYMENT + 10_000), Some(PAYMENT))
    );
    let failed_d = of("status_mismatch", Some(&failed));
    assert_eq!(failed_d["file_status"], "That bai");
    let twice_d = of("duplicate_in_file", None);
    assert_eq!(twice_d["occurrence"], 2);
    let fee_d = of("fee_mismatch", Some(&fee));
    assert_eq!((fee_d["file_fee"].as_i64(), fee_d["expected_fee"].as_i64()), (Some(3_000), Some(VNPAY_FEE)));
    let run = app.get(&format!("/v1/reconciliation/runs/{run_id}?class=amount_mismatch"), Some(&auditor)).await;
    assert_eq!(run.body["discrepancies"].as_array().unwrap().len(), 1, "{}", run.text);

    // Refusals first: a wrong action, no note, an issuer.
    let r = app.resolve(lost_d["id"].as_str().unwrap(), "confirm_payment", "", &treasurer).await;
    r.assert_problem(422, "validation-error");
    let r = app.resolve(unlisted_d["id"].as_str().unwrap(), "move_to_suspense", "why not", &treasurer).await;
    r.assert_problem(422, "action-not-allowed");
    // The money of a lost callback belongs to its payment: it is confirmed, never parked elsewhere.
    let r = app.resolve(lost_d["id"].as_str().unwrap(), "move_to_suspense", "park it", &treasurer).await;
    let p = r.assert_problem(422, "action-not-allowed");
    assert!(p["detail"].as_str().unwrap().contains("confirm_payment, accept"), "{p}");
    let issuer = app.token(Role::Issuer).await;
    app.resolve(fee_d["id"].as_str().unwrap(), "accept", "ok", &issuer).await.assert_problem(403, "forbidden");

    // The lost callback: confirmed from the provider's evidence, then settled.
    let r = app
        .resolve(lost_d["id"].as_str().unwrap(), "confirm_payment", "IPN lost; VNPAY file shows it paid", &treasurer)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["discrepancy"]["status"], "resolved");
    let p = app.payment(&lost).await;
    assert_eq!(p["status"], "succeeded", "{p}");
    assert_eq!(app.notice(&lost_notice).await["status"], "paid");
    // Resolving again does nothing more.
    let again = app.resolve(lost_d["id"].as_str().unwrap(), "confirm_payment", "again", &treasurer).await;
    again.assert_problem(409, "discrepancy-not-open");

    let ok = |r: Reply| assert_eq!(r.status, 200, "{}", r.text);
    ok(app
        .resolve(stranger_d["id"].as_str().unwrap(), "move_to_suspense", "no such order; asked VNPAY", &treasurer)
        .await);
    ok(app
        .resolve(bigger_d["id"].as_str().unwrap(), "mark_for_refund", "payer charged 10,000 too much", &treasurer)
        .await);
    ok(app.resolve(failed_d["id"].as_str().unwrap(), "move_to_suspense", "VNPAY says it failed", &treasurer).await);
    ok(app.resolve(twice_d["id"].as_str().unwrap(), "accept", "VNPAY listed it twice, paid once", &treasurer).await);
    ok(app.resolve(fee_d["id"].as_str().unwrap(), "accept", "fee dispute raised with VNPAY", &treasurer).await);
    ok(app.resolve(unlisted_d["id"].as_str().unwrap(), "accept", "expected in tomorrow's file", &treasurer).await);

    // What is left in clearing is exactly the payment the provider has not listed yet.
    assert_eq!(app.balance("provider_clearing:vnpay").await, PAYMENT);
    assert_eq!(app.balance("refunds_payable").await, -10_000);
    // Suspense: the stranger's money (credit), the failed one's (debit: to be recovered).
    assert_eq!(app.balance("suspense").await, -PAYMENT + PAYMENT);
    let all_open = app.get(&format!("/v1/reconciliation/runs/{run_id}?status=open"), Some(&treasurer)).await;
    assert_eq!(all_open.body["discrepancies"], serde_json::json!([]), "{}", all_open.text);

    // The audit log: who, when, why — for the auditor only.
    app.get("/v1/reconciliation/audit", Some(&treasurer)).await.assert_problem(403, "forbidden");
    let audit = app.get(&format!("/v1/reconciliation/audit?run_id={run_id}"), Some(&auditor)).await;
    assert_eq!(audit.status, 200, "{}", audit.text);
    let entries = audit.body["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 8, "{}", audit.text);
    assert_eq!(entries[0]["action"], "run_created");
    assert!(entries.iter().any(|e| e["action"] == "discrepancy_resolved:mark_for_refund"
        && e["note"] == "payer charged 10,000 too much"
        && e["ledger_tx_ids"][0].as_str().unwrap().starts_with("lt_")));
    for sql in ["UPDATE reconciliation_audit SET note = 'nothing happened'", "DELETE FROM reconciliation_audit"] {
        let err = app.execute(sql).await.expect_err(sql);
        assert!(err.contains("append-only"), "{sql}: {err}");
    }
    assert_eq!(app.count("reconciliation_audit").await, 8);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn a_corrected_file_supersedes_the_run_reversing_its_settlement_and_history_is_kept() {
    let app = TestApp::spawn().await;
    let treasurer = app.token(Role::Treasurer).await;
    let today = vn_today().to_string();
    let (first, _) = app.paid("vnpay", None).await;
    app.paid("vnpay", None).await;
    let (lost, _) = app.paid("vnpay", Some("drop")).await;
    let full = app.settlement_file("vnpay").await;
    // The provider's first file misses a row.
    let mut partial = lines(&full);
    let i = line_of(&partial, &merchant_ref(&app, &first).await);
    partial.remove(i);
    let r = app.upload("vnpay", &today, &join(&partial), &treasurer).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let old_run = r.body["run"]["id"].as_str().unwrap().to_string();
    // The lost callback is confirmed and settled by a resolution of the first run.
    let d = app.discrepancies(&old_run, &treasurer).await;
    let lost_d = d.iter().find(|d| d["class"] == "missing_in_gateway").unwrap();
    let r = app.resolve(lost_d["id"].as_str().unwrap(), "confirm_payment", "lost IPN", &treasurer).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(app.payment(&lost).await["status"], "succeeded");
    assert_eq!(app.balance("treasury_bank").await, 2 * (PAYMENT - VNPAY_FEE));

    // The corrected file: a new run supersedes the first; its settlements are reversed, so each
    // payment is settled exactly once, by the new run.
    let r = app.upload("vnpay", &today, &full, &treasurer).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let new_run = r.body["run"]["id"].as_str().unwrap().to_string();
    assert_eq!(r.body["run"]["supersedes"], old_run.as_str());
    assert_eq!(r.body["counts"], serde_json::json!([]), "{}", r.text);
    assert_eq!(r.body["run"]["settled_gross"], 3 * PAYMENT);
    assert_eq!(app.balance("treasury_bank").await, 3 * (PAYMENT - VNPAY_FEE));
    assert_eq!(app.balance("provider_fees").await, 3 * VNPAY_FEE);
    assert_eq!(app.balance("provider_clearing:vnpay").await, 0);
    let reversals =
        app.scalar("SELECT COUNT(*) FROM ledger_transactions WHERE kind = 'reversal' AND corrects IS NOT NULL").await;
    assert_eq!(reversals, 2, "the run's settlement and its resolution's");
    let auditor = app.token(Role::Auditor).await;
    let audit = app.get(&format!("/v1/reconciliation/audit?run_id={old_run}"), Some(&auditor)).await;
    let actions: Vec<&str> =
        audit.body["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["run_created", "discrepancy_resolved:confirm_payment", "run_superseded"]);

    let old = app.get(&format!("/v1/reconciliation/runs/{old_run}"), Some(&treasurer)).await;
    assert_eq!(old.body["run"]["status"], "superseded");
    assert_eq!(old.body["run"]["superseded_by"], new_run.as_str());
    let statuses: Vec<&str> =
        old.body["discrepancies"].as_array().unwrap().iter().map(|d| d["status"].as_str().unwrap()).collect();
    assert!(statuses.contains(&"resolved") && statuses.contains(&"superseded"), "{statuses:?}");
    // The first file again is still the first run: nothing is re-run.
    let again = app.upload("vnpay", &today, &join(&partial), &treasurer).await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.body["run"]["id"], old_run.as_str());
    assert_eq!(app.balance("treasury_bank").await, 3 * (PAYMENT - VNPAY_FEE));
    let export = app.get(&format!("/v1/exports/treasury?date={today}"), Some(&auditor)).await;
    assert_eq!(export.body["total_amount"], 3 * PAYMENT, "{}", export.text);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn the_same_file_sent_concurrently_makes_one_run_and_one_settlement() {
    let app = TestApp::spawn().await;
    let treasurer = app.token(Role::Treasurer).await;
    app.paid("momo", None).await;
    let file = app.settlement_file("momo").await;
    let today = vn_today().to_string();
    let uploads = (0..6).map(|_| app.upload("momo", &today, &file, &treasurer));
    let replies = futures::future::join_all(uploads).await;
    let ids: std::collections::BTreeSet<String> = replies
        .iter()
        .map(|r| r.body["run"]["id"].as_str().unwrap_or_else(|| panic!("{}", r.text)).to_string())
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(replies.iter().filter(|r| r.status == 201).count(), 1);
    assert_eq!(app.scalar("SELECT COUNT(*) FROM ledger_transactions WHERE kind = 'settlement'").await, 1);
    assert_eq!(app.balance("provider_clearing:momo").await, 0);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn bad_files_are_refused_whole_and_bad_rows_are_reported_by_line() {
    let app = TestApp::spawn_with(|c| c.reconciliation.max_rows = 6).await;
    let treasurer = app.token(Role::Treasurer).await;
    let today = vn_today().to_string();
    app.paid("vnpay", None).await;
    app.paid("momo", None).await;
    let vnpay = app.settlement_file("vnpay").await;
    let momo = app.settlement_file("momo").await;
    let before = app.count("ledger_transactions").await;

    app.upload("vnpay", &today, "", &treasurer).await.assert_problem(422, "settlement-file-empty");
    let r = app.upload("vnpay", &today, &momo, &treasurer).await;
    let p = r.assert_problem(422, "settlement-format-mismatch");
    assert!(p["detail"].as_str().unwrap().contains("TransactionNo"), "{p}");
    let yesterday = (vn_today() - chrono::Duration::days(1)).to_string();
    let p = app
        .upload("vnpay", &yesterday, &vnpay, &treasurer)
        .await
        .assert_problem(422, "settlement-file-rejected")
        .clone();
    assert!(p["detail"].as_str().unwrap().contains(&today), "{p}");
    let mut big = lines(&vnpay);
    for _ in 0..6 {
        big.push(big[1].clone());
    }
    app.upload("vnpay", &today, &join(&big), &treasurer).await.assert_problem(422, "settlement-file-rejected");
    app.upload("paypal", &today, &vnpay, &treasurer).await.assert_problem(422, "validation-error");
    app.upload_as("provider=vnpay", &vnpay, &treasurer).await.assert_problem(422, "validation-error");
    app.upload("vnpay", &today, &vnpay, &app.token(Role::Auditor).await).await.assert_problem(403, "forbidden");
    assert_eq!(app.count("reconciliation_runs").await, 0);
    assert_eq!(app.count("ledger_transactions").await, before, "nothing was written");

    // A file with nothing to reconcile (a header alone) is refused: it must not replace a run.
    let header_only = format!("{}\r\n", lines(&vnpay)[0]);
    let p = app
        .upload("vnpay", &today, &header_only, &treasurer)
        .await
        .assert_problem(422, "settlement-file-rejected")
        .clone();
    assert!(p["detail"].as_str().unwrap().contains("no data rows"), "{p}");

    // Row by row: a repeated header, thousands separators, decimals, a negative amount — each
    // reported with its line; LF line ends and a UTF-8 BOM are fine; the good row reconciles.
    let rows = lines(&vnpay);
    let good = rows[1].clone();
    let bad = |value: &str| set_field(&good, 4, value);
    let file = format!(
        "\u{feff}{}\n{}\n{}\n{}\n{}\n{}\n{}\n",
        rows[0],
        good,
        rows[0],
        bad("625000000.00"),
        bad("\"-625000000\""),
        bad("625.000.000"),
        bad("+625000000"),
    );
    let r = app.upload("vnpay", &today, &file, &treasurer).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["run"]["rows_settled"], 1);
    let errors: Vec<(i64, String)> = r.body["row_errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["line_no"].as_i64().unwrap(), e["reason"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(errors.iter().map(|e| e.0).collect::<Vec<_>>(), [3, 4, 5, 6, 7], "{errors:?}");
    assert!(errors[0].1.contains("header"), "{errors:?}");
    assert!(errors[1].1.contains("decimals"), "{errors:?}");
    assert!(errors[2].1.contains("negative"), "{errors:?}");
    assert!(errors[3].1.contains("thousands separators") || errors[3].1.contains("decimals"), "{errors:?}");

    // The documented generic CSV reads a provider's collections too.
    let momo_row = lines(&momo)[1].split(',').map(str::to_string).collect::<Vec<_>>();
    let paid_at = chrono::NaiveDateTime::parse_from_str(&momo_row[8], "%Y-%m-%d %H:%M:%S").unwrap();
    let generic = format!(
        "provider_txn_id,merchant_ref,amount,currency,paid_at,status,fee\r\n{},{},{},VND,{}+07:00,success,{}\r\n",
        momo_row[1],
        momo_row[2],
        momo_row[5],
        paid_at.format("%Y-%m-%dT%H:%M:%S"),
        momo_row[6]
    );
    let r = app.upload_as(&format!("provider=momo&settlement_date={today}&format=generic"), &generic, &treasurer).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["run"]["rows_settled"], 1, "{}", r.text);
    assert_eq!(r.body["run"]["format"], "generic");
    assert_eq!(app.balance("provider_clearing:momo").await, 0);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn the_collecting_banks_file_reconciles_vietqr_transfers() {
    let app = TestApp::spawn().await;
    let treasurer = app.token(Role::Treasurer).await;
    let code = app.issue_small_notice().await;
    let r = app.start_payment(&code, "vietqr").await;
    let qr = r.body["qr_payload"].as_str().unwrap().to_string();
    let form_page =
        app.get(&format!("/sandbox/bank/sandbox/transfer?qr={}", crate::helpers::urlencode(&qr)), None).await;
    assert_eq!(form_page.status, 200);
    let form = [
        ("amount", PAYMENT.to_string()),
        ("description", format!("nop tien {code}")),
        ("account", "0011012345678".into()),
    ];
    let sent = read(
        crate::helpers::browser().post(app.url("/sandbox/bank/sandbox/transfer")).form(&form).send().await.unwrap(),
    )
    .await;
    assert!(sent.status < 400, "{}", sent.text);
    assert_eq!(app.notice(&code).await["status"], "paid");
    let file = app.settlement_file("vietqr").await;
    let r = app.upload("vietqr", &vn_today().to_string(), &file, &treasurer).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["run"]["format"], "bank");
    assert_eq!(r.body["run"]["rows_settled"], 1, "{}", r.text);
    assert_eq!(app.balance("provider_clearing:vietqr").await, 0);
    assert_eq!(app.balance("treasury_bank").await, PAYMENT);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn a_run_whose_reader_stops_midway_writes_nothing_and_can_be_run_again() {
    use paygate::reconciliation::reader::SettlementReader;
    use paygate::store::StoreError;
    use paygate::store::reconciliation::{RunInput, RunSpec};
    let app = TestApp::spawn().await;
    let treasurer = app.token(Role::Treasurer).await;
    app.paid("vnpay", None).await;
    app.paid("vnpay", None).await;
    let file = app.settlement_file("vnpay").await;
    let mapping = app.state.mappings.0["vnpay"].clone();
    let rows: Vec<_> = SettlementReader::new(&mapping, file.as_bytes()).unwrap().collect();
    assert_eq!(rows.len(), 2);
    // The reader sends the first row, then fails (its channel closes without the end marker).
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    sender.send(RunInput::Rows(rows[..1].to_vec())).await.unwrap();
    drop(sender);
    let no_fee = |_: i64| None;
    let sha256 = "0".repeat(64);
    let spec = RunSpec {
        id: "rr_failed".into(),
        provider: "vnpay",
        settlement_date: vn_today(),
        file_sha256: &sha256,
        file_bytes: file.len() as i64,
        format: "vnpay",
        created_by: "test",
        match_window: chrono::Duration::hours(72),
        expected_fee: &no_fee,
        day: paygate::reconciliation::service::day_bounds(vn_today()),
    };
    let outcome = app.store.run_reconciliation(&spec, receiver).await;
    assert!(matches!(outcome, Err(StoreError::Invariant(_))), "a partial file is not a run");
    for table in
        ["reconciliation_runs", "reconciliation_matches", "reconciliation_discrepancies", "reconciliation_audit"]
    {
        assert_eq!(app.count(table).await, 0, "{table}");
    }
    assert_eq!(app.scalar("SELECT COUNT(*) FROM ledger_transactions WHERE kind = 'settlement'").await, 0);

    // Sent again, whole: one run, each payment settled once.
    let r = app.upload("vnpay", &vn_today().to_string(), &file, &treasurer).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["run"]["rows_settled"], 2);
    assert_eq!(app.balance("provider_clearing:vnpay").await, 0);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn a_corrected_file_undoes_the_resolutions_of_the_run_it_replaces() {
    let app = TestApp::spawn().await;
    let treasurer = app.token(Role::Treasurer).await;
    let today = vn_today().to_string();
    let (first, _) = app.paid("vnpay", None).await;
    app.paid("vnpay", None).await;
    let file = lines(&app.settlement_file("vnpay").await);
    let first_ref = merchant_ref(&app, &first).await;
    // The provider's first file says 10,000 more for the first payment; the treasurer books it as
    // owed back to the payer.
    let mut wrong = file.clone();
    let i = line_of(&wrong, &first_ref);
    wrong[i] = set_field(&wrong[i], 4, &((PAYMENT + 10_000) * 100).to_string());
    let r = app.upload("vnpay", &today, &join(&wrong), &treasurer).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let run_id = r.body["run"]["id"].as_str().unwrap().to_string();
    let d = app.discrepancies(&run_id, &treasurer).await;
    assert_eq!(d.len(), 1, "{d:#?}");
    let r = app.resolve(d[0]["id"].as_str().unwrap(), "mark_for_refund", "payer overcharged", &treasurer).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(app.balance("refunds_payable").await, -10_000);
    assert_eq!(app.balance("provider_clearing:vnpay").await, 0);

    // The corrected file — which also lists a failed first attempt of the same payment before its
    // success — replaces the run: the resolution is undone with it, the day settles cleanly.
    let mut corrected = file.clone();
    let i = line_of(&corrected, &first_ref);
    let failed_attempt = set_field(&corrected[i], 9, "That bai");
    corrected.insert(i, failed_attempt);
    let r = app.upload("vnpay", &today, &join(&corrected), &treasurer).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["counts"], serde_json::json!([]), "{}", r.text);
    assert_eq!(r.body["run"]["rows_settled"], 2);
    assert_eq!(app.balance("refunds_payable").await, 0);
    assert_eq!(app.balance("suspense").await, 0);
    assert_eq!(app.balance("provider_clearing:vnpay").await, 0);
    assert_eq!(app.balance("treasury_bank").await, 2 * (PAYMENT - VNPAY_FEE));
    let reversals = app.scalar("SELECT COUNT(*) FROM ledger_transactions WHERE kind = 'reversal'").await;
    assert_eq!(reversals, 3, "the run's settlement, the resolution's hold and its settlement");

    // The same payment listed again in another day's file is a duplicate naming the run that settled it.
    let yesterday = vn_today() - chrono::Duration::days(1);
    let mut other_day = vec![file[0].clone(), file[line_of(&file, &first_ref)].clone()];
    let paid_at = other_day[1].split(',').nth(7).unwrap().to_string();
    let moved = format!("{}{}", yesterday.format("%d/%m/%Y"), &paid_at[10..]);
    other_day[1] = set_field(&other_day[1], 7, &moved);
    let r = app.upload("vnpay", &yesterday.to_string(), &join(&other_day), &treasurer).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let d = &r.body["discrepancies"][0];
    assert_eq!(d["class"], "duplicate_in_file", "{}", r.text);
    let evidence = &d["evidence"];
    assert_eq!(evidence["gateway"]["payment_id"], first.as_str());
    assert!(evidence["gateway"]["settled_by_run"].as_str().unwrap().starts_with("rr_"));
    assert_eq!(app.balance("treasury_bank").await, 2 * (PAYMENT - VNPAY_FEE), "settled once");
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn an_upload_with_an_idempotency_key_replays_and_refuses_another_file_under_the_same_key() {
    let app = TestApp::spawn().await;
    let treasurer = app.token(Role::Treasurer).await;
    app.paid("zalopay", None).await;
    let file = app.settlement_file("zalopay").await;
    let query = format!("/v1/reconciliation/runs?provider=zalopay&settlement_date={}", vn_today());
    let send = |body: String, key: &'static str| {
        let req = app
            .client
            .post(app.url(&query))
            .bearer_auth(&treasurer)
            .header("idempotency-key", key)
            .header("content-type", "text/csv")
            .body(body);
        app.send(req)
    };
    let first = send(file.clone(), "recon-zalopay-1").await;
    assert_eq!(first.status, 201, "{}", first.text);
    let again = send(file.clone(), "recon-zalopay-1").await;
    assert_eq!(again.status, 201, "the first answer, replayed");
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body["run"]["id"], first.body["run"]["id"]);
    let other = format!("{file}{}\r\n", lines(&file)[1]);
    send(other, "recon-zalopay-1").await.assert_problem(422, "idempotency-key-reused");
    assert_eq!(app.count("reconciliation_runs").await, 1);
    assert_eq!(app.balance("provider_clearing:zalopay").await, 0);
    app.assert_ledger_invariants().await;
}

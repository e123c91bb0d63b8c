//! Server-rendered HTML for the sandbox: the shared layout, escaping, amount formatting and the
//! index page (`GET /`).
//!
//! Invariants: every interpolated value goes through [`esc`] (or is a number/constant we produced);
//! pages work without JavaScript (plain forms); links are absolute paths under the nest point
//! ([`Base::path`]).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use super::faults::Target;
use super::{AppState, Base, gmt7, now};

/// HTML-escaping is shared with paygate's own pages.
pub use crate::http::pages::esc;

/// `1500000` → `1.500.000 ₫` (Vietnamese grouping).
pub fn vnd(amount: i64) -> String {
    let digits = amount.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('.');
        }
        out.push(c);
    }
    if amount < 0 { format!("-{out} ₫") } else { format!("{out} ₫") }
}

/// A whole page. `title` is escaped here; `body` must already be safe HTML.
pub fn layout(title: &str, brand: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"vi\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{t}</title><style>\
body{{font-family:system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem;color:#222}}\
header{{border-bottom:3px solid #0a5;margin-bottom:1rem}} .brand{{font-weight:700;color:#0a5}}\
table{{border-collapse:collapse;width:100%}} td,th{{border:1px solid #ccc;padding:.3rem .5rem;text-align:left}}\
.amount{{font-size:1.6rem;font-weight:700}} .error{{color:#b00}} .note{{color:#666;font-size:.9rem}}\
form.inline{{display:inline}} button{{padding:.4rem 1rem;margin:.2rem}} label{{display:block;margin:.4rem 0}}\
</style></head><body><header><p class=\"brand\">{b} · SANDBOX</p><h1>{t}</h1></header>{body}\
<p class=\"note\">Simulated provider — state is in memory and per process.</p></body></html>",
        t = esc(title),
        b = esc(brand),
    )
}

/// An HTML error page with `status`.
pub fn error_page(status: StatusCode, brand: &str, title: &str, message: &str) -> Response {
    let body = format!("<p class=\"error\">{}</p>", esc(message));
    (status, Html(layout(title, brand, &body))).into_response()
}

/// `dd/MM/yyyy HH:mm:ss` in GMT+7.
pub fn vn_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.with_timezone(&gmt7()).format("%d/%m/%Y %H:%M:%S").to_string()
}

struct Row {
    at: chrono::DateTime<chrono::Utc>,
    provider: String,
    reference: String,
    amount: i64,
    status: &'static str,
    link: Option<String>,
}

/// `GET /`: providers, per-run faults (settable without JS), recent orders and transfers.
pub(crate) async fn index(State(app): State<AppState>, base: Base) -> Html<String> {
    let today = now().with_timezone(&gmt7()).format("%Y-%m-%d").to_string();
    let mut body = String::new();
    body.push_str("<h2>Simulated providers</h2><ul>");
    body.push_str(&format!(
        "<li><b>VNPAY</b> (TmnCode {}) — pay URL <code>{}</code>, IPN to <code>{}</code>; \
         <a href=\"{}?date={today}\">settlement today</a></li>",
        esc(&app.config.vnpay.tmn_code),
        esc(&base.path("/vnpay/paymentv2/vpcpay.html")),
        esc(&app.config.vnpay_ipn_url),
        esc(&base.path("/vnpay/settlement")),
    ));
    body.push_str(&format!(
        "<li><b>MoMo</b> (partnerCode {}) — <code>POST {}</code>; <a href=\"{}?date={today}\">settlement today</a></li>",
        esc(&app.config.momo.partner_code),
        esc(&base.path("/momo/v2/gateway/api/create")),
        esc(&base.path("/momo/settlement")),
    ));
    body.push_str(&format!(
        "<li><b>ZaloPay</b> (app_id {}) — <code>POST {}</code>; <a href=\"{}?date={today}\">settlement today</a></li>",
        app.config.zalopay.app_id,
        esc(&base.path("/zalopay/v2/create")),
        esc(&base.path("/zalopay/settlement")),
    ));
    for b in &app.config.banks {
        let enc: String = form_urlencoded::byte_serialize(b.name.as_bytes()).collect();
        body.push_str(&format!(
            "<li><b>Bank {}</b> — <a href=\"{}\">transfer money</a> (notifies <code>{}</code>); \
             <a href=\"{}?date={today}\">settlement today</a></li>",
            esc(&b.name),
            esc(&base.path(&format!("/bank/{enc}/transfer"))),
            esc(&b.notify_url),
            esc(&base.path(&format!("/bank/{enc}/settlement"))),
        ));
    }
    body.push_str("</ul>");
    body.push_str(&format!(
        "<p><a href=\"{}\">Callbacks sent (JSON)</a> · <a href=\"{}\">Faults (JSON)</a></p>",
        esc(&base.path("/callbacks-sent")),
        esc(&base.path("/faults"))
    ));

    let (faults, mut rows) = {
        let st = app.state();
        let faults: Vec<(Target, Option<String>)> =
            Target::ALL.into_iter().map(|t| (t, st.faults.get(&t).map(|f| f.to_string()))).collect();
        let mut rows: Vec<Row> = Vec::new();
        for o in st.vnpay.values() {
            rows.push(Row {
                at: o.created_at,
                provider: "vnpay".into(),
                reference: o.txn_ref.clone(),
                amount: o.amount,
                status: o.status.label(),
                link: None,
            });
        }
        for o in st.momo.values() {
            let enc: String = form_urlencoded::byte_serialize(o.order_id.as_bytes()).collect();
            rows.push(Row {
                at: o.created_at,
                provider: "momo".into(),
                reference: o.order_id.clone(),
                amount: o.amount,
                status: o.status.label(),
                link: Some(base.path(&format!("/momo/pay/{enc}"))),
            });
        }
        for o in st.zalopay.values() {
            let enc: String = form_urlencoded::byte_serialize(o.app_trans_id.as_bytes()).collect();
            rows.push(Row {
                at: o.created_at,
                provider: "zalopay".into(),
                reference: o.app_trans_id.clone(),
                amount: o.amount,
                status: o.status.label(),
                link: Some(base.path(&format!("/zalopay/pay/{enc}"))),
            });
        }
        for t in &st.bank {
            rows.push(Row {
                at: t.credited_at,
                provider: format!("bank:{}", t.bank),
                reference: format!("{} — {}", t.transaction_id, t.description),
                amount: t.amount,
                status: "credited",
                link: None,
            });
        }
        (faults, rows)
    };

    body.push_str("<h2>Per-run faults</h2><table><tr><th>Provider</th><th>Default fault</th><th>Change</th></tr>");
    for (t, f) in faults {
        body.push_str(&format!(
            "<tr><td>{p}</td><td>{f}</td><td><form class=\"inline\" method=\"post\" action=\"{action}\">\
             <input type=\"hidden\" name=\"provider\" value=\"{p}\">\
             <input name=\"fault\" placeholder=\"none, duplicate, delay:2000, drop, reorder, wrong_amount, bad_signature\" size=\"40\">\
             <button type=\"submit\">Set</button></form></td></tr>",
            p = t.as_str(),
            f = esc(f.as_deref().unwrap_or("none")),
            action = esc(&base.path("/faults")),
        ));
    }
    body.push_str("</table>");

    rows.sort_by_key(|r| std::cmp::Reverse(r.at));
    body.push_str("<h2>Recent orders</h2>");
    if rows.is_empty() {
        body.push_str("<p>None yet.</p>");
    } else {
        body.push_str(
            "<table><tr><th>Created (GMT+7)</th><th>Provider</th><th>Reference</th><th>Amount</th><th>Status</th></tr>",
        );
        for r in rows.iter().take(50) {
            let reference = match &r.link {
                Some(l) => format!("<a href=\"{}\">{}</a>", esc(l), esc(&r.reference)),
                None => esc(&r.reference),
            };
            body.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{reference}</td><td>{}</td><td>{}</td></tr>",
                esc(&vn_time(r.at)),
                esc(&r.provider),
                esc(&vnd(r.amount)),
                r.status
            ));
        }
        body.push_str("</table>");
    }
    Html(layout("Provider sandbox", "paygate", &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(esc(r#"<a href="x">'&'</a>"#), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    }

    #[test]
    fn amounts() {
        assert_eq!(vnd(0), "0 ₫");
        assert_eq!(vnd(999), "999 ₫");
        assert_eq!(vnd(1000), "1.000 ₫");
        assert_eq!(vnd(1_500_000), "1.500.000 ₫");
        assert_eq!(vnd(-25_000), "-25.000 ₫");
    }
}

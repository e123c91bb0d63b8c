//! Citizen pages: server-rendered HTML, usable without JavaScript, Vietnamese by default and
//! English with `?lang=en`.
//!
//! Invariants: every interpolated value is HTML-escaped; the return page verifies the
//! provider's signature on what the browser brings back and may ask the provider for the
//! status, but never marks a payment paid on its own; personal data is shown masked.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{ConnectInfo, Form, Path, Query, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::Deserialize;

use crate::app::AppState;
use crate::clock::vn_date;
use crate::notices;
use crate::payments::{self, PaymentRequest};
use crate::privacy::{mask_identifier, mask_name};
use crate::providers::RawCallback;
use crate::store::now;
use crate::store::payments::{PaymentKey, PaymentRecord};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/pay/{code}", get(notice_page).post(start_payment))
        .route("/pay/payment/{id}", get(payment_page))
        .route("/pay/return/{provider}", get(return_page))
}

#[derive(Deserialize, Default)]
pub struct LangQuery {
    lang: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Lang {
    Vi,
    En,
}

impl Lang {
    fn from(q: Option<&str>) -> Lang {
        if q == Some("en") { Lang::En } else { Lang::Vi }
    }

    fn code(self) -> &'static str {
        match self {
            Lang::Vi => "vi",
            Lang::En => "en",
        }
    }

    fn t(self, vi: &'static str, en: &'static str) -> &'static str {
        match self {
            Lang::Vi => vi,
            Lang::En => en,
        }
    }
}

/// HTML-escapes text for element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `75000000` → `75.000.000 ₫` (Vietnamese grouping).
fn dong(amount: i64) -> String {
    let digits = amount.unsigned_abs().to_string();
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push('.');
        }
        grouped.push(c);
    }
    format!("{}{grouped} ₫", if amount < 0 { "-" } else { "" })
}

/// A whole page. `here` is the path the language links point at (with `?lang=`).
fn page(lang: Lang, here: &str, title: &str, body: &str, refresh: bool) -> Response {
    let refresh = if refresh { r#"<meta http-equiv="refresh" content="5">"# } else { "" };
    let html = format!(
        r#"<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">{refresh}
<title>{title} · paygate</title>
<style>
body{{font-family:system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;color:#1b1b1b}}
table{{border-collapse:collapse;width:100%}}td,th{{border-bottom:1px solid #ddd;padding:.4rem;text-align:left;vertical-align:top}}
td.n,th.n{{text-align:right;white-space:nowrap}}.basis{{color:#555;font-size:.85rem}}
.status{{display:inline-block;padding:.1rem .5rem;border-radius:.3rem;background:#eee}}
.ok{{background:#d9f2d9}}.bad{{background:#f8d7d7}}button{{font-size:1rem;padding:.5rem 1rem;margin:.2rem}}
footer{{margin-top:2rem;color:#666;font-size:.85rem}}
</style></head>
<body><h1>{title}</h1>
{body}
<footer>paygate · <a href="{here}?lang=vi">Tiếng Việt</a> · <a href="{here}?lang=en">English</a></footer>
</body></html>"#,
        lang = lang.code(),
        title = esc(title),
        here = esc(here),
    );
    Html(html).into_response()
}

fn error_page(lang: Lang, status: StatusCode, message: &str) -> Response {
    let mut r = page(
        lang,
        "",
        lang.t("Không thực hiện được", "Something went wrong"),
        &format!("<p>{}</p>", esc(message)),
        false,
    );
    *r.status_mut() = status;
    r
}

fn status_text(lang: Lang, status: &str) -> &'static str {
    match status {
        "unpaid" => lang.t("Chưa thanh toán", "Unpaid"),
        "paid" => lang.t("Đã thanh toán", "Paid"),
        "cancelled" => lang.t("Đã hủy", "Cancelled"),
        "pending" => lang.t("Đang chờ xác nhận", "Waiting for confirmation"),
        "succeeded" => lang.t("Thanh toán thành công", "Paid successfully"),
        "failed" => lang.t("Thanh toán không thành công", "Payment failed"),
        "expired" => lang.t("Hết hạn", "Expired"),
        "refunded" => lang.t("Đã hoàn tiền", "Refunded"),
        "partially_refunded" => lang.t("Đã hoàn một phần", "Partly refunded"),
        _ => lang.t("Không rõ", "Unknown"),
    }
}

fn provider_label(name: &str) -> &'static str {
    match name {
        "vnpay" => "VNPAY",
        "momo" => "MoMo",
        "zalopay" => "ZaloPay",
        "vietqr" => "VietQR (chuyển khoản / bank transfer)",
        _ => "?",
    }
}

/// The notice with its itemised lines and legal basis, and a button per provider.
async fn notice_page(State(state): State<AppState>, Path(code): Path<String>, Query(q): Query<LangQuery>) -> Response {
    let lang = Lang::from(q.lang.as_deref());
    let code = match notices::parse_code(&code) {
        Ok(c) => c,
        Err(_) => {
            return error_page(
                lang,
                StatusCode::BAD_REQUEST,
                lang.t(
                    "Mã thông báo không hợp lệ: vui lòng kiểm tra lại từng ký tự.",
                    "This is not a valid notice code: please check each character.",
                ),
            );
        }
    };
    let found = match state.store.find_notice(code.as_str()).await {
        Ok(f) => f,
        Err(_) => {
            return error_page(
                lang,
                StatusCode::SERVICE_UNAVAILABLE,
                lang.t("Hệ thống đang bận.", "The service is busy."),
            );
        }
    };
    let Some((notice, lines)) = found else {
        return error_page(
            lang,
            StatusCode::NOT_FOUND,
            lang.t("Không có thông báo với mã này.", "No notice has this code."),
        );
    };
    let today = vn_date(now());
    let interest = notices::late_interest(&state, &notice, &lines, today).map(|l| l.amount.get()).unwrap_or(0);
    let unpaid = notice.status == "unpaid";
    let mut body = format!(
        "<p>{} <strong>{}</strong> · <span class=\"status {}\">{}</span></p>\
         <p>{}: {} ({})<br>{}: {}<br>{}: {}</p>",
        lang.t("Mã thông báo", "Notice"),
        esc(&notice.code),
        if unpaid { "" } else { "ok" },
        status_text(lang, &notice.status),
        lang.t("Người nộp", "Payer"),
        esc(&mask_name(&notice.payer_name)),
        esc(&mask_identifier(&notice.payer_identifier)),
        lang.t("Hồ sơ", "Dossier"),
        esc(&notice.dossier_ref),
        lang.t("Hạn nộp", "Due date"),
        notice.due_date,
    );
    body.push_str(&format!(
        "<table><tr><th>{}</th><th class=\"n\">{}</th></tr>",
        lang.t("Khoản thu", "Item"),
        lang.t("Số tiền", "Amount")
    ));
    for l in &lines {
        body.push_str(&format!(
            "<tr><td>{}<div class=\"basis\">{}: {}</div></td><td class=\"n\">{}</td></tr>",
            esc(&l.description),
            lang.t("Căn cứ", "Legal basis"),
            esc(&l.legal_basis),
            dong(l.amount)
        ));
    }
    body.push_str(&format!(
        "<tr><td>{}</td><td class=\"n\">{}</td></tr>",
        lang.t("Tiền chậm nộp (0,03%/ngày)", "Late-payment interest (0.03%/day)"),
        dong(if unpaid { interest } else { 0 })
    ));
    let total = if unpaid { notice.principal.saturating_add(interest) } else { 0 };
    body.push_str(&format!(
        "<tr><th>{}</th><th class=\"n\">{}</th></tr></table>",
        lang.t("Tổng số phải nộp", "Total due"),
        dong(total)
    ));
    if unpaid {
        body.push_str(&format!("<h2>{}</h2>", lang.t("Chọn cách thanh toán", "Choose how to pay")));
        for provider in state.providers.enabled() {
            body.push_str(&format!(
                "<form method=\"post\" action=\"/pay/{code}\" style=\"display:inline\">\
                 <input type=\"hidden\" name=\"provider\" value=\"{p}\"><input type=\"hidden\" name=\"lang\" value=\"{l}\">\
                 <button type=\"submit\">{label}</button></form>",
                code = esc(&notice.code),
                p = esc(provider),
                l = lang.code(),
                label = esc(provider_label(provider)),
            ));
        }
    }
    page(lang, &format!("/pay/{}", notice.code), lang.t("Thông báo nộp tiền", "Payment notice"), &body, false)
}

#[derive(Deserialize)]
struct StartForm {
    provider: String,
    lang: Option<String>,
}

/// The provider buttons post here: create the payment, then send the payer on.
async fn start_payment(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(code): Path<String>,
    Form(form): Form<StartForm>,
) -> Response {
    let lang = Lang::from(form.lang.as_deref());
    let code = match notices::parse_code(&code) {
        Ok(c) => c,
        Err(_) => {
            return error_page(
                lang,
                StatusCode::BAD_REQUEST,
                lang.t("Mã thông báo không hợp lệ.", "Invalid notice code."),
            );
        }
    };
    let req = PaymentRequest { provider: form.provider, return_url: None, locale: Some(lang.code().into()) };
    match payments::create(&state, &code, &req, &peer.ip().to_string()).await {
        Ok(p) => match &p.redirect_url {
            Some(url) => Redirect::to(url).into_response(),
            None => Redirect::to(&format!("/pay/payment/{}?lang={}", p.id, lang.code())).into_response(),
        },
        Err(problem) => error_page(lang, problem.status_code(), &problem.detail),
    }
}

fn payment_body(state: &AppState, lang: Lang, p: &PaymentRecord) -> String {
    let ok = p.status == "succeeded";
    let mut body = format!(
        "<p>{} <strong>{}</strong> · {} · <span class=\"status {}\">{}</span></p><p>{}: <strong>{}</strong></p>",
        lang.t("Thông báo", "Notice"),
        esc(&p.notice_code),
        esc(provider_label(&p.provider)),
        if ok {
            "ok"
        } else if p.status == "pending" {
            ""
        } else {
            "bad"
        },
        status_text(lang, &p.status),
        lang.t("Số tiền", "Amount"),
        dong(p.amount),
    );
    if p.overpayment || p.late_success {
        body.push_str(&format!(
            "<p>{}</p>",
            lang.t(
                "Khoản tiền này sẽ được hoàn lại cho bạn (thông báo đã được thanh toán hoặc giao dịch đã hết hạn).",
                "This amount will be refunded to you (the notice was already paid or the payment had expired).",
            )
        ));
    }
    if let (Some(payload), "pending") = (&p.qr_payload, p.status.as_str()) {
        let cfg = &state.config.providers.vietqr;
        body.push_str(&format!(
            "<p>{}</p>{}<p>{}: {} · {}<br>{}: <strong>{}</strong><br>{}: {}</p>",
            lang.t(
                "Quét mã bằng ứng dụng ngân hàng. Giữ nguyên nội dung chuyển khoản.",
                "Scan with your banking app. Keep the transfer text as it is.",
            ),
            qr_svg(payload),
            lang.t("Tài khoản", "Account"),
            esc(&cfg.account),
            esc(&cfg.account_name),
            lang.t("Nội dung", "Transfer text"),
            esc(&p.notice_code),
            lang.t("Hết hạn lúc", "Expires at"),
            esc(&notices::vn_time(p.expires_at)),
        ));
        if state.config.sandbox.enabled {
            body.push_str(&format!(
                "<p><a href=\"/sandbox/bank/{}/transfer?qr={}\">{}</a></p>",
                esc(&cfg.bank),
                esc(&form_urlencoded::byte_serialize(payload.as_bytes()).collect::<String>()),
                lang.t("Mở ứng dụng ngân hàng thử nghiệm (sandbox)", "Open the sandbox bank app"),
            ));
        }
    }
    if let Some(url) = &p.return_url {
        body.push_str(&format!("<p><a href=\"{}\">{}</a></p>", esc(url), lang.t("Quay lại", "Go back")));
    }
    body.push_str(&format!(
        "<p><a href=\"/pay/{}?lang={}\">{}</a></p>",
        esc(&p.notice_code),
        lang.code(),
        lang.t("Xem thông báo", "View the notice")
    ));
    body
}

fn qr_svg(payload: &str) -> String {
    match qrcode::QrCode::new(payload.as_bytes()) {
        Ok(code) => code.render::<qrcode::render::svg::Color<'_>>().min_dimensions(220, 220).build(),
        Err(_) => String::new(),
    }
}

/// A payment's status (the QR page while a transfer is awaited; refreshes itself).
async fn payment_page(State(state): State<AppState>, Path(id): Path<String>, Query(q): Query<LangQuery>) -> Response {
    let lang = Lang::from(q.lang.as_deref());
    match state.store.find_payment(PaymentKey::Id(&id)).await {
        Ok(Some(p)) => {
            let pending = p.status == "pending";
            let here = format!("/pay/payment/{}", p.id);
            page(lang, &here, lang.t("Thanh toán", "Payment"), &payment_body(&state, lang, &p), pending)
        }
        Ok(None) => error_page(lang, StatusCode::NOT_FOUND, lang.t("Không tìm thấy giao dịch.", "No such payment.")),
        Err(_) => {
            error_page(lang, StatusCode::SERVICE_UNAVAILABLE, lang.t("Hệ thống đang bận.", "The service is busy."))
        }
    }
}

/// Where providers send the payer back. The parameters are verified, then the payment's state
/// is shown as paygate knows it — after asking the provider if it is still pending.
async fn return_page(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let query = query.unwrap_or_default();
    let params: Vec<(String, String)> =
        form_urlencoded::parse(query.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    let param = |k: &str| params.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    let lang = Lang::from(
        param("lang").as_deref().or(param("vnp_Locale").as_deref().map(|l| if l == "en" { "en" } else { "vi" })),
    );
    let merchant_ref = match provider.as_str() {
        "vnpay" | "momo" => {
            let Some(connector) = state.providers.get(&provider) else {
                return error_page(lang, StatusCode::NOT_FOUND, lang.t("Không rõ nhà cung cấp.", "Unknown provider."));
            };
            let body = if provider == "momo" { momo_return_body(&params) } else { Vec::new() };
            match connector.verify(&RawCallback { query: &query, body: &body }) {
                Ok(event) => event.merchant_ref,
                Err(e) => {
                    tracing::warn!(provider, error = %e, "return page parameters did not verify");
                    return error_page(
                        lang,
                        StatusCode::BAD_REQUEST,
                        lang.t(
                            "Không xác minh được kết quả từ nhà cung cấp. Trạng thái thanh toán không thay đổi.",
                            "The provider's result could not be verified. The payment's status is unchanged.",
                        ),
                    );
                }
            }
        }
        // ZaloPay's redirect names the order; its state comes from ZaloPay's own answer below.
        "zalopay" => match param("apptransid") {
            Some(r) => r,
            None => {
                return error_page(
                    lang,
                    StatusCode::BAD_REQUEST,
                    lang.t("Thiếu mã giao dịch.", "Missing transaction reference."),
                );
            }
        },
        _ => return error_page(lang, StatusCode::NOT_FOUND, lang.t("Không rõ nhà cung cấp.", "Unknown provider.")),
    };
    let payment = match state.store.find_payment(PaymentKey::MerchantRef(&merchant_ref)).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            return error_page(lang, StatusCode::NOT_FOUND, lang.t("Không tìm thấy giao dịch.", "No such payment."));
        }
        Err(_) => {
            return error_page(
                lang,
                StatusCode::SERVICE_UNAVAILABLE,
                lang.t("Hệ thống đang bận.", "The service is busy."),
            );
        }
    };
    let payment = payments::refresh(&state, &payment).await.unwrap_or(payment);
    let here = format!("/pay/payment/{}", payment.id);
    let body = payment_body(&state, lang, &payment);
    let mut response =
        page(lang, &here, lang.t("Kết quả thanh toán", "Payment result"), &body, payment.status == "pending");
    response.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    response
}

/// MoMo's redirect carries the IPN fields as query parameters; rebuild the JSON its verifier reads.
fn momo_return_body(params: &[(String, String)]) -> Vec<u8> {
    let mut obj = serde_json::Map::new();
    for (k, v) in params {
        let value = match k.as_str() {
            "amount" | "transId" | "resultCode" | "responseTime" => {
                v.parse::<i64>().map(serde_json::Value::from).unwrap_or_else(|_| serde_json::Value::from(v.clone()))
            }
            _ => serde_json::Value::from(v.clone()),
        };
        obj.insert(k.clone(), value);
    }
    serde_json::to_vec(&obj).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_and_amounts() {
        assert_eq!(esc("<a href=\"x\">'&'</a>"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
        assert_eq!(dong(75_000_000), "75.000.000 ₫");
        assert_eq!(dong(500), "500 ₫");
        assert_eq!(dong(1_000), "1.000 ₫");
    }
}

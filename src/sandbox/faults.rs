//! Fault injection for the callbacks the sandbox sends.
//!
//! A fault is chosen per payment (the `fault` form field of a decide/transfer form) or per run
//! (`POST /faults` JSON `{"provider": "vnpay"|"momo"|"zalopay"|"bank", "fault": "<name>"|null}`, which
//! sets the default for every later decision of that provider; `GET /faults` shows the defaults as
//! `{"vnpay": null, "momo": "drop", …}`). The per-payment field wins: empty means "use the default",
//! `none` means "no fault, whatever the default".
//!
//! | Name | Effect on the callback |
//! |---|---|
//! | `duplicate` | delivered twice, identical bytes |
//! | `delay:<ms>` | delivered in the background after `<ms>` ms (≤ 600000); the redirect is immediate |
//! | `drop` | not delivered at all (the query API still reports the true outcome) |
//! | `reorder` | the true callback, then a stale, earlier-looking failure/pending one for the same transaction |
//! | `wrong_amount` | amount + 1 đồng, correctly signed |
//! | `bad_signature` | one hex digit of the signature/MAC changed |
//!
//! Invariants: parsing is total (unknown names are an error, never a panic); the per-run table is
//! only changed by `POST /faults`; a fault never changes what the query APIs, the redirect or the
//! settlement files report.

use std::fmt;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{AppState, Base, MAX_DELAY, pair};

/// A fault to inject into one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    Duplicate,
    Delay(Duration),
    Drop,
    Reorder,
    WrongAmount,
    BadSignature,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Duplicate => f.write_str("duplicate"),
            Fault::Delay(d) => write!(f, "delay:{}", d.as_millis()),
            Fault::Drop => f.write_str("drop"),
            Fault::Reorder => f.write_str("reorder"),
            Fault::WrongAmount => f.write_str("wrong_amount"),
            Fault::BadSignature => f.write_str("bad_signature"),
        }
    }
}

impl Fault {
    /// Parse a fault name. `""` and `"none"` are `Ok(None)`.
    pub fn parse(s: &str) -> Result<Option<Fault>, String> {
        let s = s.trim();
        let f = match s {
            "" | "none" => return Ok(None),
            "duplicate" => Fault::Duplicate,
            "drop" => Fault::Drop,
            "reorder" => Fault::Reorder,
            "wrong_amount" => Fault::WrongAmount,
            "bad_signature" => Fault::BadSignature,
            other => {
                let Some(ms) = other.strip_prefix("delay:") else {
                    return Err(format!(
                        "unknown fault {other:?}; known: duplicate, delay:<ms>, drop, reorder, wrong_amount, bad_signature"
                    ));
                };
                if ms.is_empty() || !ms.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(format!("delay must be a whole number of milliseconds, got {ms:?}"));
                }
                let ms: u64 = ms.parse().map_err(|_| "delay overflows".to_owned())?;
                let d = Duration::from_millis(ms);
                if d > MAX_DELAY {
                    return Err(format!("delay must be at most {} ms", MAX_DELAY.as_millis()));
                }
                Fault::Delay(d)
            }
        };
        Ok(Some(f))
    }
}

/// Which provider a per-run fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    Vnpay,
    Momo,
    Zalopay,
    Bank,
}

impl Target {
    pub const ALL: [Target; 4] = [Target::Vnpay, Target::Momo, Target::Zalopay, Target::Bank];

    pub fn as_str(self) -> &'static str {
        match self {
            Target::Vnpay => "vnpay",
            Target::Momo => "momo",
            Target::Zalopay => "zalopay",
            Target::Bank => "bank",
        }
    }

    pub fn parse(s: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// The fault for one decision: the per-payment field if given (`none` = explicitly none), else the
/// per-run default of `target`.
pub(crate) fn effective(app: &AppState, target: Target, field: Option<&str>) -> Result<Option<Fault>, String> {
    match field.map(str::trim).filter(|f| !f.is_empty()) {
        Some(f) => Fault::parse(f),
        None => Ok(app.state().faults.get(&target).cloned()),
    }
}

/// `<option>`s of the fault `<select>` shown on every decide/transfer page.
pub(crate) fn select_html(app: &AppState, target: Target) -> String {
    let default = app.state().faults.get(&target).map(|f| f.to_string());
    let default_label = match &default {
        Some(f) => format!("(per-run default: {f})"),
        None => "(per-run default: none)".to_owned(),
    };
    let mut out = format!(
        "<label>Fault <select name=\"fault\"><option value=\"\">{}</option>",
        super::pages::esc(&default_label)
    );
    for f in ["none", "duplicate", "delay:2000", "drop", "reorder", "wrong_amount", "bad_signature"] {
        out.push_str(&format!("<option value=\"{f}\">{f}</option>"));
    }
    out.push_str("</select></label>");
    out
}

fn table_json(app: &AppState) -> Value {
    let st = app.state();
    let mut m = Map::new();
    for t in Target::ALL {
        m.insert(t.as_str().to_owned(), st.faults.get(&t).map_or(Value::Null, |f| Value::String(f.to_string())));
    }
    Value::Object(m)
}

/// `GET /faults`
pub(crate) async fn get_faults(State(app): State<AppState>) -> Json<Value> {
    Json(table_json(&app))
}

#[derive(Deserialize)]
struct SetFault {
    provider: String,
    #[serde(default)]
    fault: Option<String>,
}

fn bad_request(msg: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": msg }))).into_response()
}

/// `POST /faults`: JSON `{"provider","fault"}` → the new table as JSON; an HTML form post
/// (`application/x-www-form-urlencoded`, fields `provider`, `fault`) → 303 back to the index.
pub(crate) async fn set_faults(State(app): State<AppState>, base: Base, headers: HeaderMap, body: Bytes) -> Response {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    let req = if is_form {
        let pairs = super::form_pairs(&body);
        match pair(&pairs, "provider") {
            Some(p) => SetFault { provider: p.to_owned(), fault: pair(&pairs, "fault").map(str::to_owned) },
            None => return bad_request("missing field `provider`".to_owned()),
        }
    } else {
        match serde_json::from_slice::<SetFault>(&body) {
            Ok(r) => r,
            Err(e) => return bad_request(format!("expected JSON {{\"provider\": …, \"fault\": …}}: {e}")),
        }
    };
    let Some(target) = Target::parse(&req.provider) else {
        return bad_request(format!("unknown provider {:?}; known: vnpay, momo, zalopay, bank", req.provider));
    };
    let fault = match Fault::parse(req.fault.as_deref().unwrap_or("")) {
        Ok(f) => f,
        Err(e) => return bad_request(e),
    };
    {
        let mut st = app.state();
        match fault {
            Some(f) => st.faults.insert(target, f),
            None => st.faults.remove(&target),
        };
    }
    if is_form { super::see_other(&base.path("/"), "paygate") } else { Json(table_json(&app)).into_response() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_names() {
        assert_eq!(Fault::parse(""), Ok(None));
        assert_eq!(Fault::parse("none"), Ok(None));
        assert_eq!(Fault::parse("duplicate"), Ok(Some(Fault::Duplicate)));
        assert_eq!(Fault::parse("delay:250"), Ok(Some(Fault::Delay(Duration::from_millis(250)))));
        assert!(Fault::parse("delay:").is_err());
        assert!(Fault::parse("delay:-1").is_err());
        assert!(Fault::parse("delay:600001").is_err());
        assert!(Fault::parse("delay:99999999999999999999999").is_err());
        assert!(Fault::parse("explode").is_err());
        for f in ["duplicate", "delay:5", "drop", "reorder", "wrong_amount", "bad_signature"] {
            assert_eq!(Fault::parse(f).ok().flatten().map(|x| x.to_string()).as_deref(), Some(f));
        }
    }
}

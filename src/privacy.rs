//! Masking of citizens' personal data shown publicly or stored from outside.
//!
//! Invariant: a masked identifier keeps at most its last 4 characters; a masked name keeps the
//! family name and the initials of the other names. Masking is total (never panics) and
//! idempotent in effect.

/// `012345678901` → `********8901`; short identifiers keep at most a third of their characters.
pub fn mask_identifier(identifier: &str) -> String {
    let chars: Vec<char> = identifier.chars().collect();
    let keep = (chars.len() / 3).min(4);
    let hidden = chars.len() - keep;
    std::iter::repeat_n('*', hidden).chain(chars[hidden..].iter().copied()).collect()
}

/// `Nguyễn Văn An` → `Nguyễn V. A.` (Vietnamese order: family name first).
pub fn mask_name(name: &str) -> String {
    let mut words = name.split_whitespace();
    let Some(family) = words.next() else { return String::new() };
    let mut out = family.to_string();
    for w in words {
        if let Some(initial) = w.chars().next() {
            out.push(' ');
            out.push(initial);
            out.push('.');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_keep_only_their_tail() {
        assert_eq!(mask_identifier("012345678901"), "********8901");
        assert_eq!(mask_identifier("0312345678-001"), "**********-001");
        assert_eq!(mask_identifier("123"), "**3");
        assert_eq!(mask_identifier(""), "");
    }

    #[test]
    fn names_keep_the_family_name_and_initials() {
        assert_eq!(mask_name("Nguyễn Văn An"), "Nguyễn V. A.");
        assert_eq!(mask_name("  Trần   Thị  Ánh Tuyết "), "Trần T. Á. T.");
        assert_eq!(mask_name("Công ty TNHH Bình Minh"), "Công t. T. B. M.");
        assert_eq!(mask_name(""), "");
    }
}

/// Keys whose values identify a citizen in providers' payloads.
const IDENTIFYING_KEYS: [&str; 8] = [
    "app_user",
    "merchant_user_id",
    "partnerClientId",
    "userInfo",
    "payer_name",
    "payer_account",
    "identifier",
    "phone",
];

/// Masks what identifies a citizen in a provider's JSON payload: the values of known keys, runs
/// of 9 or more digits (citizen id, tax code, account numbers) in free-text `description`s, and
/// the same inside ZaloPay's nested `data` string.
pub fn mask_payload(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match v {
                    Value::String(s) if IDENTIFYING_KEYS.contains(&key.as_str()) => *s = mask_identifier(s),
                    Value::String(s) if key == "description" => *s = mask_digit_runs(s),
                    Value::String(s) if key == "data" => {
                        if let Ok(mut inner) = serde_json::from_str::<Value>(s) {
                            mask_payload(&mut inner);
                            *s = inner.to_string();
                        }
                    }
                    other => mask_payload(other),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask_payload),
        _ => {}
    }
}

/// Keys of free text in providers' forms and query strings, where a payer may write an identifier.
const FREE_TEXT_KEYS: [&str; 3] = ["vnp_OrderInfo", "orderInfo", "description"];

/// Masks a form body or query string as it came, field by field: the values of identifying keys,
/// and runs of 9 or more digits in free text (and in text that is not `key=value` at all). Every
/// other value, amounts and references among them, is kept as sent, and so is the text's encoding.
pub fn mask_form(text: &str) -> String {
    text.split('&')
        .map(|field| match field.split_once('=') {
            None => mask_digit_runs(field),
            Some((key, value)) => {
                let name = form_urlencoded::parse(key.as_bytes()).next().map(|(k, _)| k).unwrap_or_default();
                if IDENTIFYING_KEYS.contains(&name.as_ref()) {
                    format!("{key}={}", mask_identifier(value))
                } else if FREE_TEXT_KEYS.contains(&name.as_ref()) {
                    format!("{key}={}", mask_digit_runs(value))
                } else {
                    field.to_string()
                }
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// `CK 079123456789 nop thue` → `CK ********6789 nop thue`.
pub fn mask_digit_runs(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() >= 9 {
            out.push_str(&mask_identifier(run));
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if c.is_ascii_digit() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

#[cfg(test)]
mod payload_tests {
    use super::*;

    #[test]
    fn payloads_are_masked_where_they_carry_identifiers() {
        let mut v = serde_json::json!({
            "description": "NGUYEN VAN AN 079123456789 TB20264Q7K9M",
            "amount": 625000000,
            "data": "{\"app_user\":\"0987654321\",\"amount\":10000}",
            "partnerClientId": "0912345678"
        });
        mask_payload(&mut v);
        assert_eq!(v["description"], "NGUYEN VAN AN ********6789 TB20264Q7K9M");
        assert_eq!(v["amount"], 625000000, "numbers are not identifiers");
        assert_eq!(v["partnerClientId"], "*******678");
        assert!(v["data"].as_str().unwrap().contains("*******321"));
    }

    #[test]
    fn forms_keep_amounts_and_references_and_mask_free_text_and_identifiers() {
        let form = "vnp_Amount=1000000000&vnp_OrderInfo=Nop+thue+CCCD+079123456789&vnp_TxnRef=PG123456789012\
                    &phone=0912345678&stray 079123456789";
        assert_eq!(
            mask_form(form),
            "vnp_Amount=1000000000&vnp_OrderInfo=Nop+thue+CCCD+********6789&vnp_TxnRef=PG123456789012\
             &phone=*******678&stray ********6789"
        );
        assert_eq!(mask_form(""), "");
    }
}

//! Our own Stripe-style signature for outgoing webhooks and partner-bank notifications, plus the
//! HMAC / constant-time helpers every connector uses.
//!
//! Header: `Paygate-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>[,v1=…]`.
//!
//! Invariants:
//! - Every signature comparison in this crate goes through [`mac_matches_hex`], which compares raw MAC
//!   bytes with `subtle::ConstantTimeEq` (only the public length is compared in variable time).
//! - [`verify`] accepts a message iff at least one `v1` value equals the MAC under at least one of
//!   the active secrets (key rotation) AND `|now − t| <= tolerance`. All secret × signature pairs are
//!   compared (no early exit on the secret side).
//! - Unknown header keys (e.g. a future `v2`) are ignored, as Stripe does; a missing or repeated `t`,
//!   a non-integer `t`, a non-hex `v1`, or a header with no `v1` is a [`SignatureError`].
//! - Secrets are held as [`SecretString`] and are never formatted or logged. No I/O, no clock: the
//!   caller passes `now_unix`.

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Sha256, Sha512};
use subtle::{Choice, ConstantTimeEq};

/// HTTP header carrying our signature.
pub const HEADER_NAME: &str = "Paygate-Signature";
/// Default tolerance between the signed timestamp and the verifier's clock.
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

/// HMAC-SHA256 of `msg` under `key`.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

/// HMAC-SHA512 of `msg` under `key`.
pub fn hmac_sha512(key: &[u8], msg: &[u8]) -> [u8; 64] {
    let mut mac = Hmac::<Sha512>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

/// Lowercase hex HMAC-SHA256.
pub fn hmac_sha256_hex(key: &SecretString, msg: &str) -> String {
    hex::encode(hmac_sha256(key.expose_secret().as_bytes(), msg.as_bytes()))
}

/// Lowercase hex HMAC-SHA512.
pub fn hmac_sha512_hex(key: &SecretString, msg: &str) -> String {
    hex::encode(hmac_sha512(key.expose_secret().as_bytes(), msg.as_bytes()))
}

/// Constant-time check that `provided_hex` (either case) decodes to exactly `expected`.
/// Returns `false` for non-hex input or a length mismatch.
pub fn mac_matches_hex(expected: &[u8], provided_hex: &str) -> bool {
    match hex::decode(provided_hex.trim()) {
        Ok(provided) => provided.len() == expected.len() && bool::from(provided.as_slice().ct_eq(expected)),
        Err(_) => false,
    }
}

/// Why a `Paygate-Signature` header was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("malformed Paygate-Signature header: {0}")]
    Malformed(&'static str),
    #[error("Paygate-Signature header has no v1 signature")]
    NoSignatures,
    #[error("no active verification secret configured")]
    NoSecrets,
    #[error("signature does not match")]
    Mismatch,
    #[error("timestamp outside tolerance (|now - t| = {skew_secs} s > {tolerance_secs} s)")]
    TimestampOutOfTolerance { skew_secs: i128, tolerance_secs: i64 },
}

fn signed_payload_mac(secret: &SecretString, t: i64, body: &[u8]) -> [u8; 32] {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// Header value `t=<t>,v1=<hex>` for `body` signed at unix time `t`.
pub fn sign(secret: &SecretString, t: i64, body: &[u8]) -> String {
    format!("t={t},v1={}", hex::encode(signed_payload_mac(secret, t, body)))
}

/// Header value carrying one `v1` per secret (for rotation on the sending side: sign with both the
/// old and the new secret while receivers migrate).
pub fn sign_multi(secrets: &[SecretString], t: i64, body: &[u8]) -> String {
    let mut out = format!("t={t}");
    for s in secrets {
        out.push_str(",v1=");
        out.push_str(&hex::encode(signed_payload_mac(s, t, body)));
    }
    out
}

/// A parsed (not yet verified) header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedHeader {
    pub t: i64,
    pub v1: Vec<[u8; 32]>,
}

/// Parse a header value. Whitespace around items is tolerated; unknown keys are ignored.
pub fn parse_header(header: &str) -> Result<ParsedHeader, SignatureError> {
    let mut t: Option<i64> = None;
    let mut v1 = Vec::new();
    if header.trim().is_empty() {
        return Err(SignatureError::Malformed("empty header"));
    }
    for item in header.split(',') {
        let item = item.trim();
        let Some((k, v)) = item.split_once('=') else {
            return Err(SignatureError::Malformed("item without `=`"));
        };
        match k.trim() {
            "t" => {
                if t.is_some() {
                    return Err(SignatureError::Malformed("repeated `t`"));
                }
                let v = v.trim();
                if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(SignatureError::Malformed("`t` is not an unsigned integer"));
                }
                t = Some(v.parse().map_err(|_| SignatureError::Malformed("`t` overflows"))?);
            }
            "v1" => {
                let mut buf = [0u8; 32];
                hex::decode_to_slice(v.trim(), &mut buf)
                    .map_err(|_| SignatureError::Malformed("`v1` is not 64 hex digits"))?;
                v1.push(buf);
            }
            "" => return Err(SignatureError::Malformed("empty key")),
            _ => {} // unknown scheme: ignored
        }
    }
    let t = t.ok_or(SignatureError::Malformed("missing `t`"))?;
    if v1.is_empty() {
        return Err(SignatureError::NoSignatures);
    }
    Ok(ParsedHeader { t, v1 })
}

/// Verify `header` for `body` against any of `secrets`, with `|now_unix − t| <= tolerance_secs`.
pub fn verify(
    header: &str,
    body: &[u8],
    secrets: &[SecretString],
    now_unix: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    let parsed = parse_header(header)?;
    if secrets.is_empty() {
        return Err(SignatureError::NoSecrets);
    }
    let mut ok = Choice::from(0u8);
    for secret in secrets {
        let expected = signed_payload_mac(secret, parsed.t, body);
        for candidate in &parsed.v1 {
            ok |= candidate.ct_eq(&expected);
        }
    }
    if !bool::from(ok) {
        return Err(SignatureError::Mismatch);
    }
    let skew = (i128::from(now_unix) - i128::from(parsed.t)).abs();
    if skew > i128::from(tolerance_secs) {
        return Err(SignatureError::TimestampOutOfTolerance { skew_secs: skew, tolerance_secs });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(x: &str) -> SecretString {
        SecretString::from(x.to_owned())
    }

    const BODY: &[u8] = br#"{"event":"payment.succeeded","id":"evt_1"}"#;

    #[test]
    fn known_answer_hmac() {
        // RFC 4231 test case 2.
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex::encode(hmac_sha512(b"Jefe", b"what do ya want for nothing?")),
            "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"
        );
    }

    #[test]
    fn sign_format_and_verify() {
        let h = sign(&s("whsec_a"), 1_700_000_000, BODY);
        assert!(h.starts_with("t=1700000000,v1="));
        assert_eq!(h.len(), "t=1700000000,v1=".len() + 64);
        assert_eq!(verify(&h, BODY, &[s("whsec_a")], 1_700_000_000, 300), Ok(()));
    }

    #[test]
    fn rotation_any_secret_any_v1() {
        let old = s("old-secret");
        let new = s("new-secret");
        // Signed with old only, receiver has [new, old].
        let h = sign(&old, 100, BODY);
        assert_eq!(verify(&h, BODY, &[new.clone(), old.clone()], 100, 300), Ok(()));
        // Signed with both, receiver has only new.
        let h2 = sign_multi(&[old.clone(), new.clone()], 100, BODY);
        assert_eq!(verify(&h2, BODY, std::slice::from_ref(&new), 100, 300), Ok(()));
        assert_eq!(verify(&h2, BODY, std::slice::from_ref(&old), 100, 300), Ok(()));
        // Receiver has neither.
        assert_eq!(verify(&h2, BODY, &[s("other")], 100, 300), Err(SignatureError::Mismatch));
        assert_eq!(verify(&h2, BODY, &[], 100, 300), Err(SignatureError::NoSecrets));
    }

    #[test]
    fn tolerance_edges() {
        let k = s("k");
        let h = sign(&k, 1_000_000, BODY);
        assert_eq!(verify(&h, BODY, std::slice::from_ref(&k), 1_000_300, 300), Ok(()));
        assert_eq!(verify(&h, BODY, std::slice::from_ref(&k), 999_700, 300), Ok(()));
        assert_eq!(
            verify(&h, BODY, std::slice::from_ref(&k), 1_000_301, 300),
            Err(SignatureError::TimestampOutOfTolerance { skew_secs: 301, tolerance_secs: 300 })
        );
        assert!(matches!(
            verify(&h, BODY, std::slice::from_ref(&k), 999_699, 300),
            Err(SignatureError::TimestampOutOfTolerance { .. })
        ));
        // Extreme values do not overflow.
        assert!(verify(&h, BODY, std::slice::from_ref(&k), i64::MIN, 300).is_err());
    }

    #[test]
    fn tampered_body_and_timestamp_rejected() {
        let k = s("k");
        let h = sign(&k, 500, BODY);
        let mut tampered = BODY.to_vec();
        tampered[3] ^= 1;
        assert_eq!(verify(&h, &tampered, std::slice::from_ref(&k), 500, 300), Err(SignatureError::Mismatch));
        let moved = h.replacen("t=500", "t=501", 1);
        assert_eq!(verify(&moved, BODY, std::slice::from_ref(&k), 500, 300), Err(SignatureError::Mismatch));
    }

    #[test]
    fn malformed_headers() {
        let k = [s("k")];
        let good_sig = "a".repeat(64);
        let cases: Vec<(String, SignatureError)> = vec![
            (String::new(), SignatureError::Malformed("empty header")),
            ("garbage".into(), SignatureError::Malformed("item without `=`")),
            (format!("v1={good_sig}"), SignatureError::Malformed("missing `t`")),
            ("t=1".into(), SignatureError::NoSignatures),
            ("t=1,v0=abc".into(), SignatureError::NoSignatures),
            (format!("t=abc,v1={good_sig}"), SignatureError::Malformed("`t` is not an unsigned integer")),
            (format!("t=-5,v1={good_sig}"), SignatureError::Malformed("`t` is not an unsigned integer")),
            (format!("t=1,t=2,v1={good_sig}"), SignatureError::Malformed("repeated `t`")),
            ("t=1,v1=zz".into(), SignatureError::Malformed("`v1` is not 64 hex digits")),
            ("t=1,v1=abcd".into(), SignatureError::Malformed("`v1` is not 64 hex digits")),
            (format!("t=99999999999999999999,v1={good_sig}"), SignatureError::Malformed("`t` overflows")),
        ];
        for (h, want) in cases {
            assert_eq!(verify(&h, BODY, &k, 1, 300), Err(want), "header {h:?}");
        }
        // Unknown keys and whitespace are tolerated.
        let h = sign(&k[0], 7, BODY);
        let spaced = format!("v0=whatever, {}", h.replace(',', " , "));
        assert_eq!(verify(&spaced, BODY, &k, 7, 300), Ok(()));
    }

    #[test]
    fn mac_matches_hex_cases() {
        let m = hmac_sha256(b"k", b"m");
        assert!(mac_matches_hex(&m, &hex::encode(m)));
        assert!(mac_matches_hex(&m, &hex::encode_upper(m)));
        assert!(!mac_matches_hex(&m, &hex::encode(&m[..31])));
        assert!(!mac_matches_hex(&m, "not hex"));
        assert!(!mac_matches_hex(&m, ""));
    }

    proptest! {
        #[test]
        fn sign_then_verify_roundtrip(
            secret in "[ -~]{1,40}",
            t in 0i64..4_000_000_000,
            body in proptest::collection::vec(any::<u8>(), 0..256),
            idx in any::<prop::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let k = [SecretString::from(secret)];
            let h = sign(&k[0], t, &body);
            prop_assert_eq!(verify(&h, &body, &k, t, 300), Ok(()));
            if !body.is_empty() {
                let mut changed = body.clone();
                let i = idx.index(changed.len());
                changed[i] ^= flip;
                prop_assert_eq!(verify(&h, &changed, &k, t, 300), Err(SignatureError::Mismatch));
            }
        }
    }
}

//! VietQR (NAPAS 247) EMVCo merchant-presented QR payloads: builder and CRC-checked parser.
//!
//! Invariants:
//! - Payload = TLV fields in this order: `00`=`01`, `01`=`12` when an amount is present else `11`,
//!   `38`={`00`=`A000000727`, `01`={`00`=BIN, `01`=account/card}, `02`=`QRIBFTTA`|`QRIBFTTC`},
//!   `53`=`704`, `54`=amount (optional), `58`=`VN`, `62`={`01` bill number, `08` purpose} (only when
//!   one is present), `63`=CRC. Every length is two decimal digits (values ≤ 99 bytes).
//! - CRC is CRC-16/CCITT-FALSE (`crc::CRC_16_IBM_3740`) over the whole string up to and including
//!   `6304`, written as 4 uppercase hex digits. [`parse`] rejects any payload whose CRC differs.
//! - Output is printable ASCII only. Vietnamese diacritics in `bill_number`/`purpose` are
//!   **transliterated** (precomposed or combining forms; `đ`→`d`, `ơ`→`o`, `ư`→`u`, …); any other
//!   non-ASCII or control character is **rejected**. Length limits (≤ 25) apply after transliteration.
//!   An empty `bill_number`/`purpose` is treated as absent.
//! - Amount is whole đồng, > 0, at most 13 digits (EMV field 54 limit). BIN is 6 digits; account is
//!   1–19 ASCII alphanumerics.
//! - Pure: no I/O.

use crc::{CRC_16_IBM_3740, Crc};

const CRC16: Crc<u16> = Crc::<u16>::new(&CRC_16_IBM_3740);
/// NAPAS GUID in field 38/00.
pub const NAPAS_GUID: &str = "A000000727";
/// Max length of `62/01` and `62/08`.
pub const MAX_ADDITIONAL_LEN: usize = 25;
const MAX_AMOUNT_DIGITS: usize = 13;

/// Errors of [`payload`] and [`parse`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VietQrError {
    #[error("invalid {field}: {why}")]
    Invalid { field: &'static str, why: String },
    #[error("CRC mismatch: payload says {found}, computed {computed}")]
    Crc { found: String, computed: String },
    #[error("malformed payload: {0}")]
    Malformed(String),
}

fn invalid(field: &'static str, why: impl Into<String>) -> VietQrError {
    VietQrError::Invalid { field, why: why.into() }
}

/// Transfer service in `38/02`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// `QRIBFTTA`: transfer to a bank account.
    ToAccount,
    /// `QRIBFTTC`: transfer to a card number.
    ToCard,
}

impl Service {
    pub fn code(self) -> &'static str {
        match self {
            Service::ToAccount => "QRIBFTTA",
            Service::ToCard => "QRIBFTTC",
        }
    }
    fn from_code(s: &str) -> Option<Self> {
        match s {
            "QRIBFTTA" => Some(Service::ToAccount),
            "QRIBFTTC" => Some(Service::ToCard),
            _ => None,
        }
    }
}

/// Inputs of a VietQR payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VietQrRequest {
    /// Acquirer BIN, 6 digits (e.g. `970403`).
    pub bin: String,
    /// Account or card number.
    pub account: String,
    pub service: Service,
    /// Whole đồng; `Some` makes a dynamic QR (`01`=`12`).
    pub amount: Option<i64>,
    pub bill_number: Option<String>,
    /// Transfer purpose; carries our notice code.
    pub purpose: Option<String>,
}

/// A parsed, CRC-checked payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedQr {
    /// `true` when `01` = `12`.
    pub dynamic: bool,
    pub bin: String,
    pub account: String,
    pub service: Service,
    pub amount: Option<i64>,
    pub bill_number: Option<String>,
    pub purpose: Option<String>,
    /// The 4 uppercase hex digits of field 63.
    pub crc: String,
}

/// CRC-16/CCITT-FALSE of `data`.
pub fn crc16(data: &[u8]) -> u16 {
    CRC16.checksum(data)
}

/// Map a Vietnamese letter (precomposed) to its ASCII base letter.
fn fold_vietnamese(c: char) -> Option<char> {
    const TABLE: &[(&str, char)] = &[
        ("àáảãạăằắẳẵặâầấẩẫậ", 'a'),
        ("ÀÁẢÃẠĂẰẮẲẴẶÂẦẤẨẪẬ", 'A'),
        ("èéẻẽẹêềếểễệ", 'e'),
        ("ÈÉẺẼẸÊỀẾỂỄỆ", 'E'),
        ("ìíỉĩị", 'i'),
        ("ÌÍỈĨỊ", 'I'),
        ("òóỏõọôồốổỗộơờớởỡợ", 'o'),
        ("ÒÓỎÕỌÔỒỐỔỖỘƠỜỚỞỠỢ", 'O'),
        ("ùúủũụưừứửữự", 'u'),
        ("ÙÚỦŨỤƯỪỨỬỮỰ", 'U'),
        ("ỳýỷỹỵ", 'y'),
        ("ỲÝỶỸỴ", 'Y'),
        ("đ", 'd'),
        ("Đ", 'D'),
    ];
    TABLE.iter().find(|(set, _)| set.contains(c)).map(|(_, base)| *base)
}

/// Combining marks used by decomposed (NFD) Vietnamese: grave, acute, circumflex, tilde, breve,
/// hook above, horn, dot below.
fn is_vietnamese_combining_mark(c: char) -> bool {
    matches!(c, '\u{0300}' | '\u{0301}' | '\u{0302}' | '\u{0303}' | '\u{0306}' | '\u{0309}' | '\u{031B}' | '\u{0323}')
}

/// Transliterate Vietnamese text to printable ASCII (`"Thanh toán đơn hàng"` → `"Thanh toan don hang"`).
/// Returns `None` if any character is neither printable ASCII nor a Vietnamese letter/diacritic.
pub fn transliterate_vi(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if (' '..='~').contains(&c) {
            out.push(c);
        } else if let Some(base) = fold_vietnamese(c) {
            out.push(base);
        } else if !is_vietnamese_combining_mark(c) {
            return None;
        }
    }
    Some(out)
}

fn tlv(out: &mut String, id: &str, value: &str) -> Result<(), VietQrError> {
    debug_assert!(id.len() == 2);
    if value.len() > 99 {
        return Err(VietQrError::Malformed(format!("field {id} is longer than 99 bytes")));
    }
    out.push_str(id);
    out.push_str(&format!("{:02}", value.len()));
    out.push_str(value);
    Ok(())
}

fn clean_text(field: &'static str, v: &Option<String>) -> Result<Option<String>, VietQrError> {
    let Some(v) = v.as_deref().filter(|v| !v.is_empty()) else { return Ok(None) };
    let ascii =
        transliterate_vi(v).ok_or_else(|| invalid(field, "contains characters outside ASCII and Vietnamese"))?;
    if ascii.chars().count() > MAX_ADDITIONAL_LEN {
        return Err(invalid(field, format!("longer than {MAX_ADDITIONAL_LEN} characters")));
    }
    Ok(Some(ascii))
}

fn check_bin(bin: &str) -> Result<(), VietQrError> {
    if bin.len() != 6 || !bin.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid("bin", "must be 6 digits"));
    }
    Ok(())
}

fn check_account(account: &str) -> Result<(), VietQrError> {
    if account.is_empty() || account.len() > 19 || !account.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(invalid("account", "must be 1–19 ASCII letters or digits"));
    }
    Ok(())
}

/// Build the payload string (see module invariants).
pub fn payload(req: &VietQrRequest) -> Result<String, VietQrError> {
    check_bin(&req.bin)?;
    check_account(&req.account)?;
    let amount = match req.amount {
        Some(a) if a <= 0 => return Err(invalid("amount", "must be > 0")),
        Some(a) if a.to_string().len() > MAX_AMOUNT_DIGITS => {
            return Err(invalid("amount", format!("more than {MAX_AMOUNT_DIGITS} digits")));
        }
        other => other,
    };
    let bill = clean_text("bill_number", &req.bill_number)?;
    let purpose = clean_text("purpose", &req.purpose)?;

    let mut beneficiary = String::new();
    tlv(&mut beneficiary, "00", &req.bin)?;
    tlv(&mut beneficiary, "01", &req.account)?;
    let mut merchant = String::new();
    tlv(&mut merchant, "00", NAPAS_GUID)?;
    tlv(&mut merchant, "01", &beneficiary)?;
    tlv(&mut merchant, "02", req.service.code())?;

    let mut out = String::new();
    tlv(&mut out, "00", "01")?;
    tlv(&mut out, "01", if amount.is_some() { "12" } else { "11" })?;
    tlv(&mut out, "38", &merchant)?;
    tlv(&mut out, "53", "704")?;
    if let Some(a) = amount {
        tlv(&mut out, "54", &a.to_string())?;
    }
    tlv(&mut out, "58", "VN")?;
    if bill.is_some() || purpose.is_some() {
        let mut additional = String::new();
        if let Some(b) = &bill {
            tlv(&mut additional, "01", b)?;
        }
        if let Some(p) = &purpose {
            tlv(&mut additional, "08", p)?;
        }
        tlv(&mut out, "62", &additional)?;
    }
    out.push_str("6304");
    let crc = crc16(out.as_bytes());
    out.push_str(&format!("{crc:04X}"));
    Ok(out)
}

/// Split a TLV string into `(id, value)` pairs.
fn split_tlv(s: &str) -> Result<Vec<(&str, &str)>, VietQrError> {
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        if rest.len() < 4 || !rest.is_char_boundary(4) {
            return Err(VietQrError::Malformed("truncated TLV header".into()));
        }
        let (id, len) = (&rest[..2], &rest[2..4]);
        if !id.bytes().all(|b| b.is_ascii_digit()) || !len.bytes().all(|b| b.is_ascii_digit()) {
            return Err(VietQrError::Malformed(format!("non-numeric TLV header {id}{len}")));
        }
        let n: usize = len.parse().expect("two ASCII digits");
        let end = 4 + n;
        if rest.len() < end || !rest.is_char_boundary(end) {
            return Err(VietQrError::Malformed(format!("field {id} runs past the end")));
        }
        if out.iter().any(|(i, _)| *i == id) {
            return Err(VietQrError::Malformed(format!("field {id} repeated")));
        }
        out.push((id, &rest[4..end]));
        rest = &rest[end..];
    }
    Ok(out)
}

fn get<'a>(fields: &[(&str, &'a str)], id: &str) -> Option<&'a str> {
    fields.iter().find(|(i, _)| *i == id).map(|(_, v)| *v)
}

/// Parse and CRC-check a payload. Unknown top-level and `62` sub-fields are tolerated and ignored.
pub fn parse(payload: &str) -> Result<ParsedQr, VietQrError> {
    if !payload.is_ascii() {
        return Err(VietQrError::Malformed("non-ASCII payload".into()));
    }
    if payload.len() < 8 || &payload[payload.len() - 8..payload.len() - 4] != "6304" {
        return Err(VietQrError::Malformed("does not end with a 6304 CRC field".into()));
    }
    let (signed, found) = payload.split_at(payload.len() - 4);
    let computed = format!("{:04X}", crc16(signed.as_bytes()));
    if !found.eq_ignore_ascii_case(&computed) {
        return Err(VietQrError::Crc { found: found.to_owned(), computed });
    }
    let top = split_tlv(payload)?;
    if top.last().map(|(id, _)| *id) != Some("63") {
        return Err(VietQrError::Malformed("CRC field 63 is not last".into()));
    }
    if get(&top, "00") != Some("01") {
        return Err(invalid("00", "payload format indicator must be 01"));
    }
    let dynamic = match get(&top, "01") {
        Some("11") => false,
        Some("12") => true,
        _ => return Err(invalid("01", "initiation method must be 11 or 12")),
    };
    if get(&top, "53") != Some("704") {
        return Err(invalid("53", "currency must be 704"));
    }
    if get(&top, "58") != Some("VN") {
        return Err(invalid("58", "country must be VN"));
    }
    let merchant = split_tlv(get(&top, "38").ok_or_else(|| invalid("38", "missing"))?)?;
    if get(&merchant, "00") != Some(NAPAS_GUID) {
        return Err(invalid("38", "GUID must be A000000727"));
    }
    let beneficiary = split_tlv(get(&merchant, "01").ok_or_else(|| invalid("38", "missing beneficiary 01"))?)?;
    let bin = get(&beneficiary, "00").ok_or_else(|| invalid("bin", "missing"))?;
    check_bin(bin)?;
    let account = get(&beneficiary, "01").ok_or_else(|| invalid("account", "missing"))?;
    check_account(account)?;
    let service = get(&merchant, "02")
        .and_then(Service::from_code)
        .ok_or_else(|| invalid("38", "service must be QRIBFTTA or QRIBFTTC"))?;
    let amount = match get(&top, "54") {
        None => None,
        Some(a) => {
            if a.is_empty() || a.len() > MAX_AMOUNT_DIGITS || !a.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid("54", "amount must be whole đồng digits"));
            }
            let v: i64 = a.parse().map_err(|_| invalid("54", "amount overflows"))?;
            if v <= 0 {
                return Err(invalid("54", "amount must be > 0"));
            }
            Some(v)
        }
    };
    let (bill_number, purpose) = match get(&top, "62") {
        None => (None, None),
        Some(v) => {
            let add = split_tlv(v)?;
            (get(&add, "01").map(str::to_owned), get(&add, "08").map(str::to_owned))
        }
    };
    Ok(ParsedQr {
        dynamic,
        bin: bin.to_owned(),
        account: account.to_owned(),
        service,
        amount,
        bill_number,
        purpose,
        crc: found.to_ascii_uppercase(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = "00020101021238570010A00000072701270006970403011300110123456780208QRIBFTTA530370454061800005802VN62340107NPS68690819thanh toan don hang63042E2E";
    const V2: &str =
        "00020101021138600010A00000072701300006970403011697040311012345670208QRIBFTTC53037045802VN63044F52";
    const V3: &str = "00020101021238570010A00000072701270006970415011300110019324180208QRIBFTTA530370454061200005802VN62170813ung ho lu lut6304C15C";

    fn v1_req() -> VietQrRequest {
        VietQrRequest {
            bin: "970403".into(),
            account: "0011012345678".into(),
            service: Service::ToAccount,
            amount: Some(180_000),
            bill_number: Some("NPS6869".into()),
            purpose: Some("thanh toan don hang".into()),
        }
    }
    fn v2_req() -> VietQrRequest {
        VietQrRequest {
            bin: "970403".into(),
            account: "9704031101234567".into(),
            service: Service::ToCard,
            amount: None,
            bill_number: None,
            purpose: None,
        }
    }
    fn v3_req() -> VietQrRequest {
        VietQrRequest {
            bin: "970415".into(),
            account: "0011001932418".into(),
            service: Service::ToAccount,
            amount: Some(120_000),
            bill_number: None,
            purpose: Some("ung ho lu lut".into()),
        }
    }

    #[test]
    fn crc_check_value() {
        assert_eq!(crc16(b"123456789"), 0x29B1);
        assert_eq!(format!("{:04X}", crc16(b"123456789")), "29B1");
    }

    #[test]
    fn vectors_reproduced_exactly() {
        assert_eq!(payload(&v1_req()).unwrap(), V1);
        assert_eq!(payload(&v2_req()).unwrap(), V2);
        assert_eq!(payload(&v3_req()).unwrap(), V3);
    }

    #[test]
    fn vectors_parse_back() {
        for (p, req) in [(V1, v1_req()), (V2, v2_req()), (V3, v3_req())] {
            let q = parse(p).unwrap();
            assert_eq!(q.bin, req.bin);
            assert_eq!(q.account, req.account);
            assert_eq!(q.service, req.service);
            assert_eq!(q.amount, req.amount);
            assert_eq!(q.dynamic, req.amount.is_some());
            assert_eq!(q.bill_number, req.bill_number);
            assert_eq!(q.purpose, req.purpose);
            assert_eq!(q.crc, &p[p.len() - 4..]);
        }
    }

    #[test]
    fn one_character_change_fails_crc() {
        for p in [V1, V2, V3] {
            for i in 0..p.len() {
                let mut b = p.as_bytes().to_vec();
                b[i] = if b[i] == b'0' { b'1' } else { b'0' };
                let s = String::from_utf8(b).unwrap();
                let r = parse(&s);
                if (p.len() - 8..p.len() - 4).contains(&i) {
                    // The `6304` tag itself: rejected before the CRC is computed.
                    assert!(matches!(r, Err(VietQrError::Malformed(_))), "position {i} of {p}");
                } else {
                    assert!(matches!(r, Err(VietQrError::Crc { .. })), "position {i} of {p}");
                }
            }
        }
        let mut wrong_crc = V1.to_owned();
        wrong_crc.replace_range(V1.len() - 1.., "F");
        assert!(matches!(parse(&wrong_crc), Err(VietQrError::Crc { .. })));
        assert!(parse(&V1.to_lowercase()).is_err());
    }

    #[test]
    fn diacritics_are_transliterated() {
        let mut r = v1_req();
        r.purpose = Some("thanh toán đơn hàng".into());
        assert_eq!(payload(&r).unwrap(), V1);
        // Decomposed (NFD) input gives the same result.
        r.purpose = Some("thanh toa\u{301}n \u{111}o\u{31B}n ha\u{300}ng".into());
        assert_eq!(payload(&r).unwrap(), V1);
        let mut r3 = v3_req();
        r3.purpose = Some("Ủng hộ lũ lụt".into());
        assert_eq!(parse(&payload(&r3).unwrap()).unwrap().purpose.as_deref(), Some("Ung ho lu lut"));
        assert_eq!(transliterate_vi("ĐẶNG VĂN ƯỚC"), Some("DANG VAN UOC".into()));
        assert_eq!(transliterate_vi("thanh toán 😀"), None);
        assert_eq!(transliterate_vi("tab\there"), None);
    }

    #[test]
    fn invalid_inputs_rejected() {
        let mut r = v1_req();
        r.purpose = Some("x".repeat(26));
        assert!(matches!(payload(&r), Err(VietQrError::Invalid { field: "purpose", .. })));
        r.purpose = Some("đ".repeat(25)); // 25 characters after transliteration: ok
        assert!(payload(&r).is_ok());
        let mut r = v1_req();
        r.bill_number = Some("日本".into());
        assert!(payload(&r).is_err());
        for bad in [Some(0), Some(-1), Some(10_000_000_000_000)] {
            let mut r = v1_req();
            r.amount = bad;
            assert!(payload(&r).is_err(), "{bad:?}");
        }
        let mut r = v1_req();
        r.bin = "97040".into();
        assert!(payload(&r).is_err());
        let mut r = v1_req();
        r.account = "0011-0123".into();
        assert!(payload(&r).is_err());
        let mut r = v1_req();
        r.bill_number = Some(String::new());
        r.purpose = Some(String::new());
        let p = payload(&r).unwrap();
        assert!(!p.contains("5802VN62"));
        assert_eq!(parse(&p).unwrap().purpose, None);
    }

    proptest::proptest! {
        #[test]
        fn payload_parse_round_trip(
            bin in "[0-9]{6}",
            account in "[0-9A-Za-z]{1,19}",
            card in proptest::bool::ANY,
            amount in proptest::option::of(1i64..=9_999_999_999_999),
            bill in proptest::option::of("[ -~]{1,25}"),
            purpose in proptest::option::of("[ -~]{1,25}"),
        ) {
            let req = VietQrRequest {
                bin,
                account,
                service: if card { Service::ToCard } else { Service::ToAccount },
                amount,
                bill_number: bill,
                purpose,
            };
            let p = payload(&req).unwrap();
            let q = parse(&p).unwrap();
            proptest::prop_assert_eq!(
                (q.bin, q.account, q.service, q.amount, q.dynamic, q.bill_number, q.purpose),
                (req.bin, req.account, req.service, req.amount, req.amount.is_some(), req.bill_number, req.purpose)
            );
        }
    }

    #[test]
    fn parser_rejects_structure_errors() {
        assert!(parse("").is_err());
        assert!(parse("6304ABCD").is_err());
        // Well-formed CRC over garbage structure.
        let mut s = "0002019999".to_owned();
        s.push_str("6304");
        let crc = format!("{:04X}", crc16(s.as_bytes()));
        s.push_str(&crc);
        assert!(matches!(parse(&s), Err(VietQrError::Malformed(_))));
    }
}

//! Payment-notice codes: `TB-YYYY-XXXXXC`, short, readable aloud and typo-proof.
//!
//! Invariants:
//! - The body (5 symbols) and the check symbol come from a 31-symbol alphabet: Crockford's
//!   base 32 (digits and capitals without I, L, O, U) less `Z` (confusable with `2`). 31 is
//!   prime, so arithmetic mod 31 is a field.
//! - The check symbol makes `Σ w_k · v_k ≡ 0 (mod 31)` over the 10 symbols
//!   `Y Y Y Y X X X X X C` (year digits included, value of a digit = the digit) with weights
//!   `w = 10, 9, …, 1`. Every weight is non-zero mod 31 and adjacent weights differ by 1, so
//!   every single-symbol substitution (difference `w·d`, `0 < |d| < 31`) and every adjacent
//!   transposition (difference `(w_k − w_{k+1})·d = d`) changes the sum mod 31: both are caught.
//! - A [`NoticeCode`] value is always valid and canonical (upper case). Parsing accepts lower
//!   case and surrounding whitespace, nothing else.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The 31 symbols, in value order.
pub const ALPHABET: &[u8; 31] = b"0123456789ABCDEFGHJKMNPQRSTVWXY";
const P: u32 = 31;
const LEN: usize = 14;
const PREFIX: &[u8; 3] = b"TB-";

/// A valid notice code such as `TB-2026-4Q7K9M`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NoticeCode([u8; LEN]);

/// Why a string is not a notice code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoticeCodeError {
    /// Not of the shape `TB-YYYY-XXXXXC`.
    #[error("a notice code looks like TB-2026-4Q7K9M (14 characters)")]
    Format,
    /// A body or check character is outside the alphabet.
    #[error("character {0:?} is not used in notice codes (no I, L, O, U, Z)")]
    Symbol(char),
    /// The check character does not match: a typo.
    #[error("the check character does not match: please re-check the code")]
    Check,
    /// The year has not four digits.
    #[error("year {0} is not a four-digit year")]
    Year(u32),
}

fn value(symbol: u8) -> Option<u32> {
    ALPHABET.iter().position(|&c| c == symbol).map(|p| p as u32)
}

/// The check value for the 9 symbols year + body.
fn check_value(symbols: &[u8]) -> u32 {
    let sum: u32 = symbols.iter().zip((2..=10u32).rev()).map(|(&s, w)| w * value(s).expect("validated symbol")).sum();
    (P - sum % P) % P
}

impl NoticeCode {
    /// A fresh random code for `year` (1000..=9999).
    pub fn generate(year: u32, rng: &mut impl rand::Rng) -> Result<NoticeCode, NoticeCodeError> {
        if !(1000..=9999).contains(&year) {
            return Err(NoticeCodeError::Year(year));
        }
        let mut out = [0u8; LEN];
        out[..3].copy_from_slice(PREFIX);
        out[3..7].copy_from_slice(year.to_string().as_bytes());
        out[7] = b'-';
        for slot in &mut out[8..13] {
            *slot = ALPHABET[rng.random_range(0..ALPHABET.len())];
        }
        let mut seq = [0u8; 9];
        seq[..4].copy_from_slice(&out[3..7]);
        seq[4..].copy_from_slice(&out[8..13]);
        out[13] = ALPHABET[check_value(&seq) as usize];
        Ok(NoticeCode(out))
    }

    /// Parses a code, accepting lower case and surrounding whitespace.
    pub fn parse(input: &str) -> Result<NoticeCode, NoticeCodeError> {
        let s = input.trim();
        if !s.is_ascii() || s.len() != LEN {
            return Err(NoticeCodeError::Format);
        }
        let mut b = [0u8; LEN];
        for (dst, src) in b.iter_mut().zip(s.bytes()) {
            *dst = src.to_ascii_uppercase();
        }
        if &b[..3] != PREFIX || b[7] != b'-' || !b[3..7].iter().all(u8::is_ascii_digit) {
            return Err(NoticeCodeError::Format);
        }
        if let Some(&bad) = b[8..].iter().find(|&&c| value(c).is_none()) {
            return Err(NoticeCodeError::Symbol(bad as char));
        }
        let mut seq = [0u8; 9];
        seq[..4].copy_from_slice(&b[3..7]);
        seq[4..].copy_from_slice(&b[8..13]);
        if value(b[13]) != Some(check_value(&seq)) {
            return Err(NoticeCodeError::Check);
        }
        Ok(NoticeCode(b))
    }

    /// The canonical text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("ASCII by construction")
    }

    /// The year in the code.
    pub fn year(&self) -> u32 {
        self.as_str()[3..7].parse().expect("digits by construction")
    }
}

impl fmt::Display for NoticeCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for NoticeCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NoticeCode({})", self.as_str())
    }
}

impl FromStr for NoticeCode {
    type Err = NoticeCodeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NoticeCode::parse(s)
    }
}

impl Serialize for NoticeCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for NoticeCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        NoticeCode::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn example_shape_and_roundtrip() {
        let mut rng = StdRng::seed_from_u64(7);
        let code = NoticeCode::generate(2026, &mut rng).unwrap();
        let s = code.to_string();
        assert_eq!(s.len(), 14);
        assert!(s.starts_with("TB-2026-"));
        assert_eq!(NoticeCode::parse(&s).unwrap(), code);
        assert_eq!(NoticeCode::parse(&format!("  {}\n", s.to_lowercase())).unwrap(), code);
        assert_eq!(code.year(), 2026);
        let json = serde_json::to_string(&code).unwrap();
        assert_eq!(serde_json::from_str::<NoticeCode>(&json).unwrap(), code);
    }

    #[test]
    fn hand_computed_check() {
        // Body 4Q7K9 for 2026: values 2,0,2,6 | 4,23(Q),7,19(K),9; weights 10..2:
        // 20+0+16+42 + 24+115+28+57+18 = 320; 320 mod 31 = 10; check = 31-10 = 21 -> 'N'.
        // Whole sum with the check (weight 1): 320 + 21 = 341 = 11 × 31.
        assert_eq!(NoticeCode::parse("tb-2026-4q7k9n").unwrap().as_str(), "TB-2026-4Q7K9N");
        assert_eq!(NoticeCode::parse("TB-2026-4Q7K9M"), Err(NoticeCodeError::Check));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "TB-2026-4Q7K9",
            "TB-2026-4Q7K9NN",
            "TX-2026-4Q7K9N",
            "TB_2026-4Q7K9N",
            "TB-20A6-4Q7K9N",
            "TB-2026-4Q7KI2",
            "TB-2026-4Q7KZ2",
            "TB-2026-4Q7K9Đ",
            "TB-2026 -4Q7K9",
            "TB-2026-4Q 7K92",
        ] {
            assert!(NoticeCode::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(NoticeCode::generate(999, &mut StdRng::seed_from_u64(1)).is_err());
        assert!(NoticeCode::generate(10000, &mut StdRng::seed_from_u64(1)).is_err());
    }

    /// For 200 random codes: every single-character substitution (by any other alphabet
    /// symbol, any other printable ASCII character, whitespace and some non-ASCII letters)
    /// and every adjacent transposition of distinct characters is rejected.
    #[test]
    fn every_substitution_and_adjacent_swap_is_rejected() {
        let mut rng = StdRng::seed_from_u64(2026);
        let mut candidates: Vec<char> = (0x20u8..0x7f).map(char::from).collect();
        candidates.extend(['\t', 'Đ', 'đ', 'Ư', 'ơ', 'É', '０', '\u{a0}']);
        let mut checked = 0u32;
        for i in 0..200 {
            let year = 2000 + (i % 100);
            let code = NoticeCode::generate(year, &mut rng).unwrap();
            let chars: Vec<char> = code.as_str().chars().collect();
            for pos in 0..chars.len() {
                for &c in &candidates {
                    if c.to_ascii_uppercase() == chars[pos] {
                        continue; // the same character (or its lower case): same code
                    }
                    let mut typo = chars.clone();
                    typo[pos] = c;
                    let typo: String = typo.into_iter().collect();
                    assert!(NoticeCode::parse(&typo).is_err(), "substitution {typo:?} of {code} accepted");
                    checked += 1;
                }
            }
            for pos in 0..chars.len() - 1 {
                if chars[pos] == chars[pos + 1] {
                    continue;
                }
                let mut typo = chars.clone();
                typo.swap(pos, pos + 1);
                let typo: String = typo.into_iter().collect();
                assert!(NoticeCode::parse(&typo).is_err(), "transposition {typo:?} of {code} accepted");
                checked += 1;
            }
        }
        assert!(checked > 200 * 14 * 90);
    }
}

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

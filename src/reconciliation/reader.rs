//! Reading a provider's settlement file (CSV) into typed rows, driven by a [`SettlementMapping`].
//!
//! A mapping (one TOML file per provider under `config/settlement/`) says which column holds what,
//! how times are written and in which zone, how amounts are scaled and which status / type values
//! mean what. [`SettlementReader`] applies it to one file.
//!
//! Invariants:
//! - **It streams.** The file is read record by record from the [`std::io::Read`] it is handed; only
//!   the current record is held in memory, whatever the size of the file. No other I/O happens.
//! - **Never floats.** Amounts are ASCII digits parsed into an `i64`, divided exactly by the
//!   mapping's `amount_scale`; anything else (sign, thousands separators, decimals, a remainder,
//!   more than 10^15 đồng) is refused with a reason. Fee rates are `Decimal`, rounded once with
//!   [`crate::money::round_vnd`].
//! - **A bad row never stops the rest.** A row that cannot be used becomes a [`RowError`] (its line,
//!   a reason in plain English, the record as text) and reading goes on with the next row. Only a
//!   problem with the file as a whole (empty, unreadable header, another provider's header) is a
//!   [`FileError`], and it is reported before any row.
//! - **Line numbers are physical lines** of the file, from 1 (normally the header): CRLF and LF
//!   line ends count once, blank lines count, and a quoted field spanning lines counts every line.
//! - Input is UTF-8; a leading byte-order mark is skipped. Invalid UTF-8 in a data row makes that
//!   row a [`RowError`]; in the header it is a [`FileError::Unreadable`].
//!
//! Line accounting: `csv::Position::line()` of a record is where the previous record stopped, which
//! is before a CRLF's `\n` and before skipped blank lines, so it cannot be used as is. The reader
//! therefore ends records on `\n` only (a CR before it is stripped from the last field), appends one
//! `\n` to the input so that every record is `\n`-terminated, and takes a record's first line as the
//! line after it minus its terminator minus the line breaks inside its (quoted) fields.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{self, Read};
use std::path::Path;

use chrono::format::{Fixed, Item, StrftimeItems};
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, TimeZone, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize};

use crate::money::{Vnd, round_vnd};
use crate::providers::bank::find_notice_code;

/// [`SettlementRow::raw`] and [`RowError::raw`] are cut to this many characters.
pub const MAX_RAW_CHARS: usize = 2_000;
/// The longest accepted provider transaction id, in characters.
pub const MAX_TXN_ID_CHARS: usize = 100;
/// The longest accepted merchant reference, in characters.
pub const MAX_MERCHANT_REF_CHARS: usize = 200;

const BOM: &[u8] = b"\xEF\xBB\xBF";
/// Characters recognised (and refused) as thousands separators in amounts.
const GROUP_SEPARATORS: [char; 6] = [',', '.', ' ', '\'', '\u{a0}', '\u{202f}'];

fn utf8() -> String {
    "utf-8".to_owned()
}

fn comma() -> char {
    ','
}

fn gmt7() -> String {
    "+07:00".to_owned()
}

fn one() -> i64 {
    1
}

/// A settlement-file layout, deserialised from TOML (serde). Unknown keys are an error.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettlementMapping {
    /// e.g. "vnpay"; the file name stem under config/settlement/.
    pub name: String,
    /// "utf-8" (a leading UTF-8 BOM is always accepted and skipped); no other encoding is implemented.
    #[serde(default = "utf8")]
    pub encoding: String,
    /// A single ASCII character other than `"`, CR and LF.
    #[serde(default = "comma")]
    pub delimiter: char,
    pub columns: ColumnMap,
    /// chrono strftime format of the time column (e.g. "%d/%m/%Y %H:%M:%S"), or "rfc3339". A format
    /// with an offset (`%z`, `%:z`) uses the file's offset; one without uses `time_zone`.
    pub time_format: String,
    /// The zone of times without an offset, as "+07:00".
    #[serde(default = "gmt7")]
    pub time_zone: String,
    /// The file's amounts are đồng × amount_scale (VNPAY: 100). A power of ten; default 1.
    #[serde(default = "one")]
    pub amount_scale: i64,
    /// Values of the status column meaning the money was collected (payment) or paid back (refund).
    /// Compared after trimming, case-sensitive. Non-empty when the status column is mapped, empty
    /// (`[]`) when it is not (then every row counts as a success).
    pub success_values: Vec<String>,
    /// Values of the kind column meaning a refund row; every other value is an error unless in
    /// payment_values. Both lists are empty when the kind column is not mapped.
    #[serde(default)]
    pub refund_values: Vec<String>,
    #[serde(default)]
    pub payment_values: Vec<String>,
    /// Expected provider fee per successful payment: flat đồng + rate × amount (rounded with
    /// [`round_vnd`]). Both optional; if neither is set, fees are not checked.
    #[serde(default)]
    pub fee_flat: Option<i64>,
    /// A decimal written as a TOML string (`fee_rate = "0.011"`); a TOML float is refused.
    #[serde(default, deserialize_with = "decimal_from_string")]
    pub fee_rate: Option<Decimal>,
}

/// Which header column holds each value. Names are matched exactly after trimming.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnMap {
    pub provider_txn_id: String,
    pub merchant_ref: String,
    pub amount: String,
    pub paid_at: String,
    /// Absent → every row counts as success.
    #[serde(default)]
    pub status: Option<String>,
    /// Absent → fee 0.
    #[serde(default)]
    pub fee: Option<String>,
    /// Absent → every row is a payment.
    #[serde(default)]
    pub kind: Option<String>,
    /// Absent → VND assumed; present → must be "VND".
    #[serde(default)]
    pub currency: Option<String>,
    /// Refunds: the payment's provider txn id.
    #[serde(default)]
    pub original_txn_id: Option<String>,
    /// For files whose refund rows repeat the payment's id in `provider_txn_id` and carry their own
    /// id elsewhere (ZaloPay `refund_id`): on a refund row, provider_txn_id is read from this column
    /// and original_txn_id from the `provider_txn_id` column. Needs the kind column.
    #[serde(default)]
    pub refund_txn_id: Option<String>,
    /// Extra free-text columns searched for a notice code (e.g. bank "description"), besides merchant_ref.
    #[serde(default)]
    pub reference: Vec<String>,
}

fn decimal_from_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Decimal>, D::Error> {
    let text: Option<String> = Option::deserialize(deserializer)?;
    text.map(|t| {
        t.trim()
            .parse::<Decimal>()
            .map_err(|e| serde::de::Error::custom(format!("fee_rate {t:?} is not a decimal number: {e}")))
    })
    .transpose()
}

/// How the time column is parsed.
#[derive(Debug, Clone)]
enum TimeParse {
    Rfc3339,
    /// A strftime format that carries its own offset.
    WithOffset(String),
    /// A strftime format of a local time in the mapping's zone.
    Local(String),
}

/// The validated, ready-to-use parts of a mapping that do not depend on a header.
#[derive(Debug, Clone)]
struct Compiled {
    delimiter: u8,
    offset: FixedOffset,
    time: TimeParse,
}

impl SettlementMapping {
    /// Parses and validates a mapping. Errors name the problem.
    pub fn from_toml(text: &str) -> Result<SettlementMapping, String> {
        let mapping: SettlementMapping =
            toml::from_str(text).map_err(|e| format!("not a valid settlement mapping: {e}"))?;
        mapping.validate()?;
        Ok(mapping)
    }

    /// Loads every `*.toml` in a directory, keyed by `name`, which must equal the file name stem.
    /// Errors name the file. Files are read in sorted order, so the first error is deterministic.
    pub fn load_dir(dir: &Path) -> Result<BTreeMap<String, SettlementMapping>, String> {
        let entries =
            std::fs::read_dir(dir).map_err(|e| format!("{}: cannot list the directory: {e}", dir.display()))?;
        let mut paths = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| format!("{}: cannot list the directory: {e}", dir.display()))?.path();
            if path.extension().is_some_and(|ext| ext == "toml") && path.is_file() {
                paths.push(path);
            }
        }
        paths.sort();
        let mut mappings = BTreeMap::new();
        for path in paths {
            let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let mapping = SettlementMapping::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
            if mapping.name != stem {
                return Err(format!(
                    "{}: name {:?} differs from the file name (expected {stem:?})",
                    path.display(),
                    mapping.name
                ));
            }
            mappings.insert(mapping.name.clone(), mapping);
        }
        Ok(mappings)
    }

    /// The fee the provider should charge on a payment of `amount` đồng, if the mapping says.
    ///
    /// `amount` is a valid amount (`0..=10^15` đồng, as every [`SettlementRow::amount`] is); outside
    /// that range there is no meaningful fee and `None` is returned as well.
    pub fn expected_fee(&self, amount: i64) -> Option<i64> {
        if self.fee_flat.is_none() && self.fee_rate.is_none() {
            return None;
        }
        let amount = Vnd::new(amount).ok()?;
        let variable = match self.fee_rate {
            Some(rate) => round_vnd(rate * amount.to_decimal()).ok()?.get(),
            None => 0,
        };
        self.fee_flat.unwrap_or(0).checked_add(variable)
    }

    /// Checks everything [`SettlementMapping::from_toml`] checks, for a mapping built another way.
    pub fn validate(&self) -> Result<(), String> {
        self.compile().map(|_| ())
    }

    fn compile(&self) -> Result<Compiled, String> {
        if self.name.is_empty() || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(format!("name {:?} must be non-empty ASCII letters, digits, '_' or '-'", self.name));
        }
        let encoding = self.encoding.trim().to_ascii_lowercase();
        if encoding != "utf-8" && encoding != "utf8" {
            return Err(format!("encoding {:?} is not supported (only \"utf-8\")", self.encoding));
        }
        if !self.delimiter.is_ascii() || matches!(self.delimiter, '"' | '\r' | '\n') {
            return Err(format!(
                "delimiter {:?} must be one ASCII character other than '\"', CR and LF",
                self.delimiter
            ));
        }
        let delimiter = self.delimiter as u8;

        let c = &self.columns;
        let mut named: Vec<(&str, &str)> = vec![
            ("provider_txn_id", &c.provider_txn_id),
            ("merchant_ref", &c.merchant_ref),
            ("amount", &c.amount),
            ("paid_at", &c.paid_at),
        ];
        for (role, column) in [
            ("status", &c.status),
            ("fee", &c.fee),
            ("kind", &c.kind),
            ("currency", &c.currency),
            ("original_txn_id", &c.original_txn_id),
            ("refund_txn_id", &c.refund_txn_id),
        ] {
            if let Some(column) = column {
                named.push((role, column));
            }
        }
        named.extend(c.reference.iter().map(|column| ("reference", column.as_str())));
        if let Some((role, _)) = named.iter().find(|(_, column)| column.trim().is_empty()) {
            return Err(format!("columns.{role} names an empty column"));
        }

        let time = time_parse(&self.time_format)?;
        let offset = parse_offset(&self.time_zone)
            .ok_or_else(|| format!("time_zone {:?} is not an offset like \"+07:00\"", self.time_zone))?;

        if self.amount_scale <= 0 || !is_power_of_ten(self.amount_scale) {
            return Err(format!("amount_scale {} must be a positive power of ten (1, 10, 100, …)", self.amount_scale));
        }

        for (list, values) in [
            ("success_values", &self.success_values),
            ("refund_values", &self.refund_values),
            ("payment_values", &self.payment_values),
        ] {
            if values.iter().any(|v| v.trim().is_empty()) {
                return Err(format!("{list} contains an empty value"));
            }
        }
        match (&c.status, self.success_values.is_empty()) {
            (Some(_), true) => return Err("success_values must not be empty when columns.status is set".to_owned()),
            (None, false) => {
                return Err(
                    "success_values must be empty ([]) when there is no columns.status: every row is a success"
                        .to_owned(),
                );
            }
            _ => {}
        }
        if c.kind.is_some() {
            if self.payment_values.is_empty() {
                return Err("payment_values must not be empty when columns.kind is set".to_owned());
            }
            if let Some(both) =
                self.refund_values.iter().find(|r| self.payment_values.iter().any(|p| p.trim() == r.trim()))
            {
                return Err(format!("{both:?} is in both refund_values and payment_values"));
            }
        } else {
            if !self.refund_values.is_empty() || !self.payment_values.is_empty() {
                return Err("refund_values and payment_values need columns.kind".to_owned());
            }
            if c.refund_txn_id.is_some() {
                return Err("columns.refund_txn_id needs columns.kind (to tell refund rows)".to_owned());
            }
        }

        if let Some(flat) = self.fee_flat
            && !(0..=Vnd::MAX_AMOUNT.get()).contains(&flat)
        {
            return Err(format!("fee_flat {flat} must be between 0 and 10^15 đồng"));
        }
        if let Some(rate) = self.fee_rate
            && (rate.is_sign_negative() || rate >= Decimal::ONE)
        {
            return Err(format!("fee_rate {rate} must be at least 0 and below 1"));
        }
        Ok(Compiled { delimiter, offset, time })
    }
}

fn is_power_of_ten(mut n: i64) -> bool {
    while n >= 10 && n % 10 == 0 {
        n /= 10;
    }
    n == 1
}

/// `±HH:MM`, at most ±14:00.
fn parse_offset(text: &str) -> Option<FixedOffset> {
    let b = text.trim().as_bytes();
    if b.len() != 6 || b.get(3) != Some(&b':') {
        return None;
    }
    let sign = match b.first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let two = |i: usize| -> Option<i32> {
        let (hi, lo) = (*b.get(i)?, *b.get(i + 1)?);
        (hi.is_ascii_digit() && lo.is_ascii_digit()).then(|| i32::from(hi - b'0') * 10 + i32::from(lo - b'0'))
    };
    let (hours, minutes) = (two(1)?, two(4)?);
    if hours > 14 || minutes > 59 || (hours == 14 && minutes > 0) {
        return None;
    }
    FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60))
}

/// Validates `time_format`: a known strftime format that writes and reads back a date with a time.
fn time_parse(format: &str) -> Result<TimeParse, String> {
    if format.trim().eq_ignore_ascii_case("rfc3339") {
        return Ok(TimeParse::Rfc3339);
    }
    // `%#z` parses only: chrono panics when asked to write it, which the check below does.
    let parse_only = StrftimeItems::new("%#z").next();
    let mut with_offset = false;
    for item in StrftimeItems::new(format) {
        match item {
            Item::Error => return Err(format!("time_format {format:?} is not a valid strftime format")),
            Item::Fixed(Fixed::Internal(_)) if Some(&item) == parse_only.as_ref() => {
                return Err(format!("time_format {format:?}: %#z is not supported; use %z or %:z"));
            }
            Item::Fixed(
                Fixed::TimezoneOffset
                | Fixed::TimezoneOffsetColon
                | Fixed::TimezoneOffsetDoubleColon
                | Fixed::TimezoneOffsetTripleColon
                | Fixed::TimezoneOffsetColonZ
                | Fixed::TimezoneOffsetZ
                | Fixed::RFC2822
                | Fixed::RFC3339,
            ) => with_offset = true,
            _ => {}
        }
    }
    // Write a sample time with the format and read it back: this refuses formats that lack the date
    // or the time to the minute, and formats chrono cannot parse (e.g. %Z).
    let incomplete = || format!("time_format {format:?} must give a full date and a time (at least to the minute)");
    let naive = NaiveDate::from_ymd_opt(2026, 12, 31).and_then(|d| d.and_hms_opt(23, 58, 0)).ok_or_else(incomplete)?;
    let mut sample = String::new();
    if with_offset {
        let offset = FixedOffset::east_opt(7 * 3600).ok_or_else(incomplete)?;
        let at = offset.from_local_datetime(&naive).single().ok_or_else(incomplete)?;
        write!(sample, "{}", at.format(format)).map_err(|_| incomplete())?;
        match DateTime::parse_from_str(&sample, format) {
            Ok(back) if back == at => Ok(TimeParse::WithOffset(format.to_owned())),
            _ => Err(incomplete()),
        }
    } else {
        write!(sample, "{}", naive.format(format)).map_err(|_| incomplete())?;
        match NaiveDateTime::parse_from_str(&sample, format) {
            Ok(back) if back == naive => Ok(TimeParse::Local(format.to_owned())),
            _ => Err(incomplete()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RowKind {
    Payment,
    Refund,
}

/// One valid data row, in the gateway's units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SettlementRow {
    /// 1-based physical line number of the row's first line in the file (the header is normally line 1).
    pub line: u64,
    pub kind: RowKind,
    /// Trimmed, non-empty, at most [`MAX_TXN_ID_CHARS`] characters.
    pub provider_txn_id: String,
    /// Trimmed, possibly empty (bank rows), at most [`MAX_MERCHANT_REF_CHARS`] characters.
    pub merchant_ref: String,
    /// None when the column is absent or the cell empty.
    pub original_txn_id: Option<String>,
    /// Whole đồng, > 0 (the file's value divided exactly by amount_scale).
    pub amount: i64,
    /// Whole đồng, >= 0.
    pub fee: i64,
    pub paid_at: DateTime<Utc>,
    /// The date of paid_at in the mapping's time_zone (what "settlement date" is compared with).
    pub local_date: NaiveDate,
    /// True when the status value is in success_values (or there is no status column).
    pub success: bool,
    /// The status text, trimmed ("" when no status column).
    pub status: String,
    /// First notice code found in merchant_ref, then in the reference columns.
    pub notice_code: Option<String>,
    /// The record re-serialised as one CSV line (RFC 4180 quoting), at most [`MAX_RAW_CHARS`] characters.
    pub raw: String,
}

/// A row that could not be read: reported with its line number; reading continues with the next row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowError {
    pub line: u64,
    pub reason: String,
    /// The record as one CSV line (invalid UTF-8 replaced by U+FFFD), at most [`MAX_RAW_CHARS`] characters.
    pub raw: String,
}

/// A problem with the file as a whole: nothing of it can be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    #[error("the file is empty")]
    Empty,
    /// The header lacks columns the mapping needs: most likely another provider's format.
    #[error("the header does not match the {mapping} format: missing column(s) {missing:?}")]
    HeaderMismatch { mapping: String, missing: Vec<String> },
    /// e.g. invalid UTF-8 in the header, a column named twice, the input failing.
    #[error("line {line}: {reason}")]
    Unreadable { line: u64, reason: String },
    /// The mapping itself fails [`SettlementMapping::validate`] (only possible for a mapping that did
    /// not come from [`SettlementMapping::from_toml`]).
    #[error("the settlement mapping is invalid: {0}")]
    InvalidMapping(String),
}

/// A mapped column: its position in the header and its name (for messages).
#[derive(Debug, Clone)]
struct Col {
    index: usize,
    name: String,
}

/// A mapping resolved against one file's header.
#[derive(Debug, Clone)]
struct Plan {
    header: Vec<String>,
    delimiter: u8,
    offset: FixedOffset,
    time: TimeParse,
    scale: i64,
    provider_txn_id: Col,
    merchant_ref: Col,
    amount: Col,
    paid_at: Col,
    status: Option<Col>,
    fee: Option<Col>,
    kind: Option<Col>,
    currency: Option<Col>,
    original_txn_id: Option<Col>,
    refund_txn_id: Option<Col>,
    reference: Vec<Col>,
    success_values: Vec<String>,
    refund_values: Vec<String>,
    payment_values: Vec<String>,
}

type Source<R> = io::Chain<io::Chain<io::Cursor<Vec<u8>>, R>, &'static [u8]>;

/// Streams rows from `input`. `new` reads and checks the header (skipping a UTF-8 BOM); iteration
/// yields one item per data record. If the input itself fails mid-way, one [`RowError`] says so and
/// iteration ends.
pub struct SettlementReader<R: Read> {
    plan: Plan,
    csv: csv::Reader<Source<R>>,
    record: csv::ByteRecord,
    done: bool,
    /// Set when the input itself failed (not a bad row): the file was not read to its end.
    input_failed: Option<RowError>,
}

impl<R: Read> SettlementReader<R> {
    /// Whether the input failed before its end (the last item was that failure). A caller must not
    /// treat what was read as the whole file.
    pub fn input_failed(&self) -> Option<&RowError> {
        self.input_failed.as_ref()
    }

    pub fn new(mapping: &SettlementMapping, mut input: R) -> Result<Self, FileError> {
        let compiled = mapping.compile().map_err(FileError::InvalidMapping)?;

        // Skip a byte-order mark before the CSV parser sees the bytes (so a quoted first field works).
        let mut head = [0u8; 3];
        let mut filled = 0;
        while filled < head.len() {
            match input.read(&mut head[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(FileError::Unreadable { line: 1, reason: format!("the file cannot be read: {e}") });
                }
            }
        }
        let head = &head[..filled];
        let prefix = if head == BOM { Vec::new() } else { head.to_vec() };
        // The extra "\n" makes every record end with one (see the module docs); after a final line end
        // it is only a blank line.
        let source = io::Cursor::new(prefix).chain(input).chain(&b"\n"[..]);
        let mut csv = csv::ReaderBuilder::new()
            .delimiter(compiled.delimiter)
            .flexible(true)
            .has_headers(false)
            .terminator(csv::Terminator::Any(b'\n'))
            .from_reader(source);

        // The header is the first record that is not a blank line.
        let mut record = csv::ByteRecord::new();
        let header_line = loop {
            let start = csv.position().line();
            match csv.read_byte_record(&mut record) {
                Ok(false) => return Err(FileError::Empty),
                Ok(true) if is_blank(&record) => {}
                Ok(true) => break record_line(&record, start, csv.position().line()),
                Err(e) => {
                    return Err(FileError::Unreadable {
                        line: e.position().map_or(start, csv::Position::line),
                        reason: format!("the header cannot be read: {e}"),
                    });
                }
            }
        };
        let mut header = Vec::with_capacity(record.len());
        for (i, bytes) in fields(&record).enumerate() {
            let name = std::str::from_utf8(bytes).map_err(|_| FileError::Unreadable {
                line: header_line,
                reason: format!("header column {} is not valid UTF-8", i + 1),
            })?;
            header.push(name.trim().to_owned());
        }
        let mut seen = BTreeSet::new();
        if let Some(twice) = header.iter().find(|name| !seen.insert(name.as_str())) {
            return Err(FileError::Unreadable {
                line: header_line,
                reason: format!("the header names column {twice:?} more than once"),
            });
        }

        let mut missing: Vec<String> = Vec::new();
        let mut col = |name: &str| -> Col {
            let name = name.trim();
            match header.iter().position(|h| h == name) {
                Some(index) => Col { index, name: name.to_owned() },
                None => {
                    if !missing.iter().any(|m| m == name) {
                        missing.push(name.to_owned());
                    }
                    Col { index: usize::MAX, name: name.to_owned() }
                }
            }
        };
        let c = &mapping.columns;
        let provider_txn_id = col(&c.provider_txn_id);
        let merchant_ref = col(&c.merchant_ref);
        let amount = col(&c.amount);
        let paid_at = col(&c.paid_at);
        let status = c.status.as_deref().map(&mut col);
        let fee = c.fee.as_deref().map(&mut col);
        let kind = c.kind.as_deref().map(&mut col);
        let currency = c.currency.as_deref().map(&mut col);
        let original_txn_id = c.original_txn_id.as_deref().map(&mut col);
        let refund_txn_id = c.refund_txn_id.as_deref().map(&mut col);
        let reference = c.reference.iter().map(|name| col(name)).collect();
        if !missing.is_empty() {
            return Err(FileError::HeaderMismatch { mapping: mapping.name.clone(), missing });
        }

        let trimmed = |values: &[String]| values.iter().map(|v| v.trim().to_owned()).collect::<Vec<_>>();
        let plan = Plan {
            header,
            delimiter: compiled.delimiter,
            offset: compiled.offset,
            time: compiled.time,
            scale: mapping.amount_scale,
            provider_txn_id,
            merchant_ref,
            amount,
            paid_at,
            status,
            fee,
            kind,
            currency,
            original_txn_id,
            refund_txn_id,
            reference,
            success_values: trimmed(&mapping.success_values),
            refund_values: trimmed(&mapping.refund_values),
            payment_values: trimmed(&mapping.payment_values),
        };
        Ok(SettlementReader { plan, csv, record, done: false, input_failed: None })
    }
}

impl<R: Read> std::fmt::Debug for SettlementReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SettlementReader")
            .field("header", &self.plan.header)
            .field("line", &self.csv.position().line())
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<R: Read> Iterator for SettlementReader<R> {
    type Item = Result<SettlementRow, RowError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let start = self.csv.position().line();
            match self.csv.read_byte_record(&mut self.record) {
                Ok(false) => self.done = true,
                Ok(true) if is_blank(&self.record) => {}
                Ok(true) => {
                    let line = record_line(&self.record, start, self.csv.position().line());
                    return Some(self.plan.row(&self.record, line));
                }
                Err(e) => {
                    // Only the input failing gets here (records are bytes and may vary in length);
                    // nothing after it can be trusted, so this is the last item.
                    self.done = true;
                    let error = RowError {
                        line: e.position().map_or(start, csv::Position::line),
                        reason: format!("the rest of the file cannot be read: {e}"),
                        raw: String::new(),
                    };
                    self.input_failed = Some(error.clone());
                    return Some(Err(error));
                }
            }
        }
        None
    }
}

/// Field `i` of a record, without the CR of a CRLF line end on the last field.
fn field(record: &csv::ByteRecord, i: usize) -> &[u8] {
    let bytes = record.get(i).unwrap_or_default();
    if i + 1 == record.len() { bytes.strip_suffix(b"\r").unwrap_or(bytes) } else { bytes }
}

fn fields(record: &csv::ByteRecord) -> impl Iterator<Item = &[u8]> {
    (0..record.len()).map(move |i| field(record, i))
}

/// A blank (or whitespace-only) line: one field and nothing in it.
fn is_blank(record: &csv::ByteRecord) -> bool {
    record.len() <= 1 && field(record, 0).iter().all(u8::is_ascii_whitespace)
}

/// The physical line a record starts on. `start` is the reader's line before the record was read
/// (before any skipped blank lines), `end` the line after its terminating `\n`; the `\n`s inside its
/// fields are line breaks within quoted fields. (Only a quoted field left open at the end of the
/// file lacks its own terminator; `start` bounds that case.)
fn record_line(record: &csv::ByteRecord, start: u64, end: u64) -> u64 {
    let inner: u64 = record.iter().map(|f| f.iter().filter(|&&b| b == b'\n').count() as u64).sum();
    end.saturating_sub(inner + 1).max(start)
}

/// Fields joined by the delimiter with RFC 4180 quoting, cut to [`MAX_RAW_CHARS`] characters.
fn raw_line<'a>(fields: impl Iterator<Item = Cow<'a, str>>, delimiter: u8) -> String {
    let delimiter = char::from(delimiter);
    let mut out = String::new();
    for (i, text) in fields.enumerate() {
        // Each char is at most 4 bytes: past this many bytes there are enough characters.
        if out.len() > MAX_RAW_CHARS * 4 {
            break;
        }
        if i > 0 {
            out.push(delimiter);
        }
        if text.contains([delimiter, '"', '\r', '\n']) {
            out.push('"');
            out.push_str(&text.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(&text);
        }
    }
    if let Some((cut, _)) = out.char_indices().nth(MAX_RAW_CHARS) {
        out.truncate(cut);
    }
    out
}

/// A value quoted for a message, shortened if long.
fn quote(value: &str) -> String {
    const MAX: usize = 60;
    match value.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}…", &value[..cut]),
        None => format!("{value:?}"),
    }
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// "1,000,000", "1.000.000", "1 000 000": digit groups of three after a first group of one to three.
fn is_grouped(s: &str) -> bool {
    let Some(separator) = s.chars().find(|c| !c.is_ascii_digit()) else { return false };
    if !GROUP_SEPARATORS.contains(&separator) {
        return false;
    }
    let mut groups = s.split(separator);
    let first_ok = groups.next().is_some_and(|g| all_digits(g) && g.len() <= 3);
    let mut rest = 0;
    for group in groups {
        if group.len() != 3 || !all_digits(group) {
            return false;
        }
        rest += 1;
    }
    first_ok && rest > 0
}

/// "12000.50", "12000,00", "1,000.50", ".5": digits (possibly grouped), a decimal mark, digits.
fn is_decimal(s: &str) -> bool {
    let Some(mark) = s.rfind(['.', ',']) else { return false };
    let (whole, fraction) = (&s[..mark], &s[mark + 1..]);
    let mark = &s[mark..=mark];
    all_digits(fraction) && (whole.is_empty() || all_digits(whole) || (is_grouped(whole) && !whole.contains(mark)))
}

/// An amount cell in the file's units → whole đồng. Never floats: digits into an i64, exact division.
fn parse_money(text: &str, column: &str, scale: i64, zero_ok: bool) -> Result<i64, String> {
    let text = text.trim();
    let problem = |what: &str| format!("{column} {}: {what}", quote(text));
    if text.is_empty() {
        return Err(format!("{column} is empty"));
    }
    if text.starts_with('-') {
        return Err(problem("negative amounts are not allowed"));
    }
    if text.starts_with('+') {
        return Err(problem("a leading '+' is not allowed"));
    }
    if !all_digits(text) {
        return Err(problem(if is_grouped(text) {
            "thousands separators are not allowed"
        } else if is_decimal(text) {
            "decimals are not allowed; amounts are whole units"
        } else {
            "only the digits 0-9 are allowed"
        }));
    }
    let too_large = || problem("the amount is too large (the cap is 10^15 đồng)");
    let value = text
        .bytes()
        .try_fold(0i64, |acc, b| acc.checked_mul(10)?.checked_add(i64::from(b - b'0')))
        .ok_or_else(too_large)?;
    if value % scale != 0 {
        return Err(problem(&format!("not a whole number of đồng (the file's amounts are đồng × {scale})")));
    }
    let dong = value / scale;
    if dong > Vnd::MAX_AMOUNT.get() {
        return Err(too_large());
    }
    if dong == 0 && !zero_ok {
        return Err(problem("amount must be positive"));
    }
    Ok(dong)
}

impl Plan {
    /// One data record → a row or the reason it is refused.
    fn row(&self, record: &csv::ByteRecord, line: u64) -> Result<SettlementRow, RowError> {
        // A row that cannot be split into its columns: any long digit run may be an identifier.
        let lossy = || {
            let raw = raw_line(fields(record).map(String::from_utf8_lossy), self.delimiter);
            crate::privacy::mask_digit_runs(&raw)
        };
        let fail = |reason: String| Err(RowError { line, reason, raw: lossy() });
        if record.len() == self.header.len()
            && fields(record).zip(&self.header).enumerate().all(|(i, (f, h))| {
                let f = if i == 0 { f.strip_prefix(BOM).unwrap_or(f) } else { f };
                std::str::from_utf8(f).is_ok_and(|t| t.trim() == h)
            })
        {
            return fail("a repeated header line".to_owned());
        }
        if record.len() != self.header.len() {
            return fail(format!("expected {} fields, found {}", self.header.len(), record.len()));
        }
        let mut texts = Vec::with_capacity(record.len());
        for (i, bytes) in fields(record).enumerate() {
            match std::str::from_utf8(bytes) {
                Ok(text) => texts.push(text),
                Err(_) => {
                    let name = self.header.get(i).map_or("", String::as_str);
                    return fail(format!("column {} ({name}) is not valid UTF-8", i + 1));
                }
            }
        }
        // Free-text reference columns (bank transfer texts) may carry a citizen's identifier typed by
        // the payer: kept masked in the evidence, as in the callback inbox.
        let raw = raw_line(
            texts.iter().enumerate().map(|(i, t)| {
                if self.reference.iter().any(|c| c.index == i) {
                    Cow::Owned(crate::privacy::mask_digit_runs(t))
                } else {
                    Cow::Borrowed(*t)
                }
            }),
            self.delimiter,
        );
        match self.values(&texts) {
            Ok(mut row) => {
                row.line = line;
                row.raw = raw;
                Ok(row)
            }
            Err(reason) => Err(RowError { line, reason, raw }),
        }
    }

    /// The typed values of a record of the right length, valid UTF-8. `line` and `raw` are left empty.
    fn values(&self, f: &[&str]) -> Result<SettlementRow, String> {
        let get = |col: &Col| f.get(col.index).copied().unwrap_or_default().trim();

        let kind = match &self.kind {
            None => RowKind::Payment,
            Some(col) => {
                let value = get(col);
                if self.refund_values.iter().any(|v| v == value) {
                    RowKind::Refund
                } else if self.payment_values.iter().any(|v| v == value) {
                    RowKind::Payment
                } else {
                    let known = self.payment_values.iter().chain(&self.refund_values).map(|v| quote(v));
                    return Err(format!(
                        "unknown transaction type {} in {} (expected one of {})",
                        quote(value),
                        col.name,
                        known.collect::<Vec<_>>().join(", ")
                    ));
                }
            }
        };

        let (txn_col, original_col) = match (&self.refund_txn_id, kind) {
            (Some(refund_col), RowKind::Refund) => (refund_col, Some(&self.provider_txn_id)),
            _ => (&self.provider_txn_id, self.original_txn_id.as_ref()),
        };
        let provider_txn_id = get(txn_col);
        if provider_txn_id.is_empty() {
            return Err(format!("{} is empty: the provider's transaction id is required", txn_col.name));
        }
        if provider_txn_id.chars().count() > MAX_TXN_ID_CHARS {
            return Err(format!("{} is longer than {MAX_TXN_ID_CHARS} characters", txn_col.name));
        }
        let original_txn_id = match original_col.map(get) {
            Some(id) if id.chars().count() > MAX_TXN_ID_CHARS => {
                let name = original_col.map_or("", |c| c.name.as_str());
                return Err(format!("{name} is longer than {MAX_TXN_ID_CHARS} characters"));
            }
            Some(id) if !id.is_empty() => Some(id.to_owned()),
            _ => None,
        };
        let merchant_ref = get(&self.merchant_ref);
        if merchant_ref.chars().count() > MAX_MERCHANT_REF_CHARS {
            return Err(format!("{} is longer than {MAX_MERCHANT_REF_CHARS} characters", self.merchant_ref.name));
        }

        let amount = parse_money(get(&self.amount), &self.amount.name, self.scale, false)?;
        let fee = match &self.fee {
            Some(col) => parse_money(get(col), &col.name, self.scale, true)?,
            None => 0,
        };
        if let Some(col) = &self.currency {
            let currency = get(col);
            if currency != "VND" {
                return Err(format!("{} {}: only VND is accepted", col.name, quote(currency)));
            }
        }

        let time = get(&self.paid_at);
        if time.is_empty() {
            return Err(format!("{} is empty", self.paid_at.name));
        }
        let at = match &self.time {
            TimeParse::Rfc3339 => DateTime::parse_from_rfc3339(time).ok(),
            TimeParse::WithOffset(format) => DateTime::parse_from_str(time, format).ok(),
            TimeParse::Local(format) => NaiveDateTime::parse_from_str(time, format)
                .ok()
                .and_then(|naive| self.offset.from_local_datetime(&naive).single()),
        };
        let Some(at) = at else {
            let expected = match &self.time {
                TimeParse::Rfc3339 => "an RFC 3339 time such as 2026-03-15T09:30:00+07:00".to_owned(),
                TimeParse::WithOffset(format) | TimeParse::Local(format) => format!("a time in the format {format:?}"),
            };
            return Err(format!("{} {}: not {expected}", self.paid_at.name, quote(time)));
        };

        let (success, status) = match &self.status {
            Some(col) => {
                let status = get(col);
                (self.success_values.iter().any(|v| v == status), status.to_owned())
            }
            None => (true, String::new()),
        };
        let notice_code = find_notice_code(merchant_ref)
            .or_else(|| self.reference.iter().find_map(|col| find_notice_code(get(col))))
            .map(|code| code.to_string());

        Ok(SettlementRow {
            line: 0,
            kind,
            provider_txn_id: provider_txn_id.to_owned(),
            merchant_ref: merchant_ref.to_owned(),
            original_txn_id,
            amount,
            fee,
            paid_at: at.with_timezone(&Utc),
            local_date: at.with_timezone(&self.offset).date_naive(),
            success,
            status,
            notice_code,
            raw: String::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CODE: &str = "TB-2026-4Q7K9N";
    const GENERIC_HEADER: &str = "provider_txn_id,merchant_ref,amount,currency,paid_at,status,fee\r\n";

    fn mappings() -> BTreeMap<String, SettlementMapping> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/settlement");
        SettlementMapping::load_dir(&dir).expect("the shipped mappings load")
    }

    fn mapping(name: &str) -> SettlementMapping {
        mappings().remove(name).expect("a shipped mapping")
    }

    fn read(mapping: &SettlementMapping, data: &[u8]) -> Vec<Result<SettlementRow, RowError>> {
        SettlementReader::new(mapping, data).expect("the header is accepted").collect()
    }

    fn rows(mapping: &SettlementMapping, data: &[u8]) -> Vec<SettlementRow> {
        read(mapping, data).into_iter().map(|r| r.expect("a valid row")).collect()
    }

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().expect("a test time")
    }

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("a test date")
    }

    /// A generic file with the given data lines (CRLF).
    fn generic_file(lines: &[&str]) -> String {
        let mut out = GENERIC_HEADER.to_owned();
        for line in lines {
            out.push_str(line);
            out.push_str("\r\n");
        }
        out
    }

    /// One generic data line with the given amount and fee cells (quoted when needed).
    fn generic_line(amount: &str, fee: &str) -> String {
        let cell =
            |s: &str| if s.contains([',', '"']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_owned() };
        format!("T1,pay-1,{},VND,2026-03-15T09:30:00+07:00,success,{}", cell(amount), cell(fee))
    }

    fn single_error(mapping: &SettlementMapping, data: &str) -> RowError {
        let mut items = read(mapping, data.as_bytes());
        assert_eq!(items.len(), 1, "{items:?}");
        items.remove(0).expect_err("the row is refused")
    }

    // ---- the shipped mappings, on files in the exact sandbox layouts ----

    #[test]
    fn every_shipped_mapping_loads() {
        let all = mappings();
        assert_eq!(all.keys().map(String::as_str).collect::<Vec<_>>(), ["bank", "generic", "momo", "vnpay", "zalopay"]);
        assert_eq!(all["vnpay"].expected_fee(15_000_000), Some(1_650));
        assert_eq!(all["momo"].expected_fee(15_000_000), Some(1_000));
        assert_eq!(all["zalopay"].expected_fee(500_000), Some(1_000));
        assert_eq!(all["bank"].expected_fee(500_000), Some(0));
        assert_eq!(all["generic"].expected_fee(500_000), None);
    }

    #[test]
    fn vnpay_file() {
        let file = "TmnCode,TransactionNo,TxnRef,TransactionType,Amount,Fee,BankCode,PayDate,OriginalTransactionNo,Status\r\n\
                    PAYGATE1,14400001,01JQ7ZK3M5N8P,01,1500000000,165000,NCB,15/03/2026 09:30:00,,Thanh cong\r\n\
                    PAYGATE1,14400002,01JQ7ZK3M5N8P,02,1500000000,0,NCB,16/03/2026 00:15:00,14400001,Hoan tien thanh cong\r\n\
                    PAYGATE1,14400003,01JQ7ZK3M5N9Q,03,25050000,0,VCB,16/03/2026 06:00:00,14400000,Hoan tien thanh cong\r\n";
        let got = rows(&mapping("vnpay"), file.as_bytes());
        assert_eq!(got.len(), 3);
        assert_eq!(
            got[0],
            SettlementRow {
                line: 2,
                kind: RowKind::Payment,
                provider_txn_id: "14400001".into(),
                merchant_ref: "01JQ7ZK3M5N8P".into(),
                original_txn_id: None,
                amount: 15_000_000,
                fee: 1_650,
                paid_at: utc("2026-03-15T02:30:00Z"),
                local_date: day(2026, 3, 15),
                success: true,
                status: "Thanh cong".into(),
                notice_code: None,
                raw: "PAYGATE1,14400001,01JQ7ZK3M5N8P,01,1500000000,165000,NCB,15/03/2026 09:30:00,,Thanh cong".into(),
            }
        );
        // A refund just after midnight GMT+7: the UTC date is the day before, the local date is not.
        let refund = &got[1];
        assert_eq!((refund.line, refund.kind, refund.provider_txn_id.as_str()), (3, RowKind::Refund, "14400002"));
        assert_eq!(refund.original_txn_id.as_deref(), Some("14400001"));
        assert_eq!((refund.amount, refund.fee), (15_000_000, 0));
        assert_eq!(refund.paid_at, utc("2026-03-15T17:15:00Z"));
        assert_eq!(refund.local_date, day(2026, 3, 16));
        assert!(refund.success);
        assert_eq!(refund.status, "Hoan tien thanh cong");
        assert_eq!((got[2].kind, got[2].amount, got[2].line), (RowKind::Refund, 250_500, 4));
    }

    #[test]
    fn momo_file() {
        let file = "partnerCode,transId,orderId,requestId,transType,amount,fee,payType,transTime,originalTransId,originalOrderId,status\r\n\
                    MOMOPG01,3151001,pay_01JQ7ZK3,req-1,payment,2500000,1000,qr,2026-03-15 10:00:05,,,SUCCESS\r\n\
                    MOMOPG01,3151002,rf_01JQ80AB,req-2,refund,500000,0,,2026-03-15 23:59:59,3151001,pay_01JQ7ZK3,SUCCESS\r\n";
        let got = rows(&mapping("momo"), file.as_bytes());
        assert_eq!(got.len(), 2);
        let (pay, refund) = (&got[0], &got[1]);
        assert_eq!(
            (pay.line, pay.kind, pay.provider_txn_id.as_str(), pay.merchant_ref.as_str()),
            (2, RowKind::Payment, "3151001", "pay_01JQ7ZK3")
        );
        assert_eq!((pay.amount, pay.fee, pay.original_txn_id.clone()), (2_500_000, 1_000, None));
        assert_eq!(pay.paid_at, utc("2026-03-15T03:00:05Z"));
        assert!(pay.success);
        assert_eq!((refund.line, refund.kind, refund.provider_txn_id.as_str()), (3, RowKind::Refund, "3151002"));
        assert_eq!(refund.merchant_ref, "rf_01JQ80AB");
        assert_eq!(refund.original_txn_id.as_deref(), Some("3151001"));
        assert_eq!((refund.amount, refund.fee), (500_000, 0));
        assert_eq!((refund.paid_at, refund.local_date), (utc("2026-03-15T16:59:59Z"), day(2026, 3, 15)));
    }

    #[test]
    fn zalopay_file_refund_ids() {
        let file = "app_id,zp_trans_id,app_trans_id,type,refund_id,m_refund_id,amount,fee,server_time,status\r\n\
                    2554,260315000001,260315_01JQ7ZK3,PAYMENT,,,750000,1000,2026-03-15 08:00:00,SUCCESS\r\n\
                    2554,260315000001,260315_01JQ7ZK3,REFUND,9900001,260315_2554_r1,750000,0,2026-03-15 08:30:00,SUCCESS\r\n";
        let got = rows(&mapping("zalopay"), file.as_bytes());
        assert_eq!(got.len(), 2);
        let (pay, refund) = (&got[0], &got[1]);
        assert_eq!(
            (pay.kind, pay.provider_txn_id.as_str(), pay.original_txn_id.clone()),
            (RowKind::Payment, "260315000001", None)
        );
        assert_eq!((pay.merchant_ref.as_str(), pay.amount, pay.fee), ("260315_01JQ7ZK3", 750_000, 1_000));
        assert_eq!(pay.paid_at, utc("2026-03-15T01:00:00Z"));
        // The refund's own id comes from refund_id; zp_trans_id names the refunded payment.
        assert_eq!((refund.kind, refund.provider_txn_id.as_str()), (RowKind::Refund, "9900001"));
        assert_eq!(refund.original_txn_id.as_deref(), Some("260315000001"));
        assert_eq!(
            (refund.merchant_ref.as_str(), refund.amount, refund.fee, refund.line),
            ("260315_01JQ7ZK3", 750_000, 0, 3)
        );

        // A refund row without its refund_id is refused, naming the column.
        let bad = file.replace("REFUND,9900001,", "REFUND,,");
        let items = read(&mapping("zalopay"), bad.as_bytes());
        let err = items[1].clone().expect_err("no refund id");
        assert!(err.reason.contains("refund_id is empty"), "{}", err.reason);
    }

    #[test]
    fn bank_file_finds_notice_codes() {
        let file = format!(
            "bank,account,transaction_id,event_id,amount,fee,credited_at,description\r\n\
             vcb,0011004455667,FT26074A1B2C,evt_0001,12500000,0,2026-03-15T09:30:00+07:00,\"NGUYEN VAN A, {CODE} nop tien\"\r\n\
             vcb,0011004455667,FT26074D3E4F,evt_0002,300000,0,2026-03-15T11:00:00+07:00,chuyen tien tb2026 4q7k9n\r\n\
             vcb,0011004455667,FT26074G5H6I,,80000,0,2026-03-15T12:00:00Z,khong co ma\r\n"
        );
        let got = rows(&mapping("bank"), file.as_bytes());
        assert_eq!(got.len(), 3);
        assert_eq!(
            got[0],
            SettlementRow {
                line: 2,
                kind: RowKind::Payment,
                provider_txn_id: "FT26074A1B2C".into(),
                merchant_ref: "evt_0001".into(),
                original_txn_id: None,
                amount: 12_500_000,
                fee: 0,
                paid_at: utc("2026-03-15T02:30:00Z"),
                local_date: day(2026, 3, 15),
                success: true,
                status: String::new(),
                notice_code: Some(CODE.into()),
                raw: format!(
                    "vcb,0011004455667,FT26074A1B2C,evt_0001,12500000,0,2026-03-15T09:30:00+07:00,\"NGUYEN VAN A, {CODE} nop tien\""
                ),
            }
        );
        assert_eq!(got[1].notice_code.as_deref(), Some(CODE));
        // An empty event_id is allowed; a time in another offset is converted; the local date is GMT+7's.
        assert_eq!((got[2].merchant_ref.as_str(), got[2].notice_code.clone()), ("", None));
        assert_eq!((got[2].paid_at, got[2].local_date), (utc("2026-03-15T12:00:00Z"), day(2026, 3, 15)));
    }

    #[test]
    fn generic_file_status_and_currency() {
        let file = generic_file(&[
            &format!("G1,{CODE},150000,VND,2026-03-15T09:30:00+07:00,success,0"),
            "G2,pay-2,200000,VND,2026-03-15T09:31:00+07:00,failed,0",
            "G3,pay-3,200000,USD,2026-03-15T09:32:00+07:00,success,0",
            "G4,pay-4,200000,,2026-03-15T09:33:00+07:00,success,0",
        ]);
        let items = read(&mapping("generic"), file.as_bytes());
        assert_eq!(items.len(), 4);
        let first = items[0].clone().expect("valid");
        assert_eq!((first.amount, first.success, first.notice_code.as_deref()), (150_000, true, Some(CODE)));
        // A row that is not a success is still a row: the matcher reports the status.
        let failed = items[1].clone().expect("valid");
        assert_eq!((failed.success, failed.status.as_str(), failed.line), (false, "failed", 3));
        let usd = items[2].clone().expect_err("USD");
        assert_eq!(usd.line, 4);
        assert!(usd.reason.contains("only VND"), "{}", usd.reason);
        assert_eq!(usd.raw, "G3,pay-3,200000,USD,2026-03-15T09:32:00+07:00,success,0");
        assert!(items[3].clone().expect_err("empty currency").reason.contains("only VND"));
    }

    // ---- file-level shapes ----

    #[test]
    fn bom_and_crlf() {
        let file = format!("\u{feff}{}", generic_file(&[&generic_line("1000", "0"), &generic_line("2000", "10")]));
        let got = rows(&mapping("generic"), file.as_bytes());
        assert_eq!(got.iter().map(|r| (r.line, r.amount, r.fee)).collect::<Vec<_>>(), [(2, 1000, 0), (3, 2000, 10)]);
        assert!(!got[0].raw.contains('\r'));
        // LF only, no final line end, and a BOM before a quoted first header field.
        let file = format!(
            "\u{feff}\"provider_txn_id\",merchant_ref,amount,currency,paid_at,status,fee\n{}\n{}",
            generic_line("1", "0"),
            generic_line("2", "0")
        );
        let got = rows(&mapping("generic"), file.as_bytes());
        assert_eq!(got.iter().map(|r| (r.line, r.amount)).collect::<Vec<_>>(), [(2, 1), (3, 2)]);
        assert!(!got[1].raw.ends_with('\n'));
    }

    #[test]
    fn blank_lines_are_skipped_and_counted() {
        let file = format!(
            "\r\n{GENERIC_HEADER}\r\n{}\r\n\n   \r\n{}\r\n\r\n\r\n\n",
            generic_line("1000", "0"),
            generic_line("2000", "0")
        );
        let got = rows(&mapping("generic"), file.as_bytes());
        assert_eq!(got.iter().map(|r| (r.line, r.amount)).collect::<Vec<_>>(), [(4, 1000), (7, 2000)]);
    }

    #[test]
    fn repeated_header_line() {
        let one = generic_file(&[&generic_line("1000", "0")]);
        let file = format!("{one}\u{feff}{one}");
        let items = read(&mapping("generic"), file.as_bytes());
        assert_eq!(items.len(), 3);
        assert_eq!(items[0].as_ref().map(|r| r.line), Ok(2));
        let err = items[1].clone().expect_err("a header again");
        assert_eq!((err.line, err.reason.as_str()), (3, "a repeated header line"));
        assert_eq!(items[2].as_ref().map(|r| r.line), Ok(4));
    }

    #[test]
    fn wrong_field_count() {
        let generic = mapping("generic");
        let err = single_error(&generic, &generic_file(&["G1,pay-1,1000,VND,2026-03-15T09:30:00+07:00,success"]));
        assert_eq!((err.line, err.reason.as_str()), (2, "expected 7 fields, found 6"));
        let err =
            single_error(&generic, &generic_file(&["G1,pay-1,1000,VND,2026-03-15T09:30:00+07:00,success,0,extra"]));
        assert_eq!(err.reason, "expected 7 fields, found 8");
        assert_eq!(err.raw, "G1,pay-1,1000,VND,2026-03-15T09:30:00+07:00,success,0,extra");
    }

    #[test]
    fn bad_amounts_each_have_their_reason() {
        let generic = mapping("generic");
        let cases = [
            ("", "amount is empty"),
            ("   ", "amount is empty"),
            ("-5000", "negative amounts are not allowed"),
            ("+5000", "a leading '+' is not allowed"),
            ("1,000,000", "thousands separators are not allowed"),
            ("1.000.000", "thousands separators are not allowed"),
            ("1 000 000", "thousands separators are not allowed"),
            ("1\u{a0}000", "thousands separators are not allowed"),
            ("12000.50", "decimals are not allowed; amounts are whole units"),
            ("12000.00", "decimals are not allowed; amounts are whole units"),
            ("12000,5", "decimals are not allowed; amounts are whole units"),
            ("1,000.50", "decimals are not allowed; amounts are whole units"),
            ("1e6", "only the digits 0-9 are allowed"),
            ("12000đ", "only the digits 0-9 are allowed"),
            ("١٢٣", "only the digits 0-9 are allowed"),
            ("99999999999999999999", "too large"),
            ("1000000000000001", "too large"),
            ("0", "amount must be positive"),
            ("000", "amount must be positive"),
        ];
        for (amount, reason) in cases {
            let err = single_error(&generic, &generic_file(&[&generic_line(amount, "0")]));
            assert!(err.reason.contains(reason), "{amount:?}: {}", err.reason);
            assert!(err.reason.starts_with("amount"), "{amount:?}: {}", err.reason);
            assert_eq!(err.line, 2);
        }
        // The cap itself, leading zeros and surrounding spaces are fine.
        for (amount, dong) in [("1000000000000000", 1_000_000_000_000_000), ("007", 7), (" 5000 ", 5000)] {
            assert_eq!(rows(&generic, generic_file(&[&generic_line(amount, "0")]).as_bytes())[0].amount, dong);
        }
        // Fees follow the same rules, except that zero is allowed.
        for (fee, reason) in [("", "fee is empty"), ("-1", "negative"), ("1,000", "thousands"), ("1.5", "decimals")] {
            let err = single_error(&generic, &generic_file(&[&generic_line("1000", fee)]));
            assert!(err.reason.contains(reason), "{fee:?}: {}", err.reason);
        }
        assert_eq!(rows(&generic, generic_file(&[&generic_line("1000", "0")]).as_bytes())[0].fee, 0);
        // VNPAY's ×100: the value must divide exactly.
        let vnpay_line = |amount: &str, fee: &str| {
            format!(
                "TmnCode,TransactionNo,TxnRef,TransactionType,Amount,Fee,BankCode,PayDate,OriginalTransactionNo,Status\r\n\
                     T,1,R,01,{amount},{fee},NCB,15/03/2026 09:30:00,,Thanh cong\r\n"
            )
        };
        let vnpay = mapping("vnpay");
        let err = single_error(&vnpay, &vnpay_line("150050", "0"));
        assert!(err.reason.contains("Amount \"150050\": not a whole number of đồng"), "{}", err.reason);
        let err = single_error(&vnpay, &vnpay_line("150000", "165001"));
        assert!(err.reason.contains("Fee \"165001\": not a whole number of đồng"), "{}", err.reason);
        assert!(single_error(&vnpay, &vnpay_line("99", "0")).reason.contains("not a whole number"));
        assert!(single_error(&vnpay, &vnpay_line("00", "0")).reason.contains("amount must be positive"));
        assert!(single_error(&vnpay, &vnpay_line("100000000000000100", "0")).reason.contains("too large"));
    }

    #[test]
    fn invalid_utf8_spoils_only_its_row() {
        let mut file = GENERIC_HEADER.as_bytes().to_vec();
        file.extend_from_slice(b"G1,pay\xff1,1000,VND,2026-03-15T09:30:00+07:00,success,0\r\n");
        file.extend_from_slice(generic_line("2000", "0").as_bytes());
        let items = read(&mapping("generic"), &file);
        assert_eq!(items.len(), 2);
        let err = items[0].clone().expect_err("not UTF-8");
        assert_eq!((err.line, err.reason.as_str()), (2, "column 2 (merchant_ref) is not valid UTF-8"));
        assert!(err.raw.contains("pay\u{fffd}1"), "{}", err.raw);
        assert_eq!(items[1].as_ref().map(|r| (r.line, r.amount)), Ok((3, 2000)));
    }

    #[test]
    fn another_providers_file_is_a_header_mismatch() {
        let momo = "partnerCode,transId,orderId,requestId,transType,amount,fee,payType,transTime,originalTransId,originalOrderId,status\r\n\
                    MOMOPG01,3151001,pay_01JQ7ZK3,req-1,payment,2500000,1000,qr,2026-03-15 10:00:05,,,SUCCESS\r\n";
        let err = SettlementReader::new(&mapping("vnpay"), momo.as_bytes()).unwrap_err();
        let missing = [
            "TransactionNo",
            "TxnRef",
            "Amount",
            "PayDate",
            "Status",
            "Fee",
            "TransactionType",
            "OriginalTransactionNo",
        ];
        assert_eq!(
            err,
            FileError::HeaderMismatch { mapping: "vnpay".into(), missing: missing.map(String::from).to_vec() }
        );
        assert!(
            err.to_string()
                .starts_with("the header does not match the vnpay format: missing column(s) [\"TransactionNo\"")
        );
        // Column names match exactly (after trimming): a case difference is a mismatch.
        let err =
            SettlementReader::new(&mapping("generic"), GENERIC_HEADER.replace("fee", "Fee").as_bytes()).unwrap_err();
        assert_eq!(err, FileError::HeaderMismatch { mapping: "generic".into(), missing: vec!["fee".into()] });
        let spaced = GENERIC_HEADER.replace(',', " , ");
        assert!(SettlementReader::new(&mapping("generic"), spaced.as_bytes()).is_ok());
    }

    #[test]
    fn empty_and_header_only_files() {
        let generic = mapping("generic");
        for empty in [&b""[..], b"\xEF\xBB\xBF", b"\r\n\r\n  \n", b"\n"] {
            assert_eq!(SettlementReader::new(&generic, empty).unwrap_err(), FileError::Empty, "{empty:?}");
        }
        assert_eq!(FileError::Empty.to_string(), "the file is empty");
        for header_only in [
            GENERIC_HEADER,
            GENERIC_HEADER.trim_end(),
            "provider_txn_id,merchant_ref,amount,currency,paid_at,status,fee\r\n\r\n",
        ] {
            let reader = SettlementReader::new(&generic, header_only.as_bytes()).expect("header only is a file");
            assert_eq!(reader.count(), 0);
        }
    }

    #[test]
    fn unreadable_headers() {
        let generic = mapping("generic");
        let twice = "provider_txn_id,merchant_ref,amount,currency,paid_at,status,fee,amount\r\n";
        assert_eq!(
            SettlementReader::new(&generic, twice.as_bytes()).unwrap_err(),
            FileError::Unreadable { line: 1, reason: "the header names column \"amount\" more than once".into() }
        );
        let mut bad = b"\r\n".to_vec();
        bad.extend_from_slice(b"provider_txn_id,merchant\xC3_ref,amount\r\n");
        assert_eq!(
            SettlementReader::new(&generic, &bad[..]).unwrap_err(),
            FileError::Unreadable { line: 2, reason: "header column 2 is not valid UTF-8".into() }
        );
    }

    #[test]
    fn line_numbers_count_lines_inside_quoted_fields() {
        let file = generic_file(&[
            "G1,\"two\r\nlines\",1000,VND,2026-03-15T09:30:00+07:00,success,0",
            "G2,\"three\nshort\nlines\",2000,VND,2026-03-15T09:30:00+07:00,success,0",
            "G3,pay-3,3000,VND,2026-03-15T09:30:00+07:00,\"suc\"\"cess\"",
            &generic_line("4000", "0"),
        ]);
        let items = read(&mapping("generic"), file.as_bytes());
        let lines: Vec<u64> = items
            .iter()
            .map(|i| match i {
                Ok(row) => row.line,
                Err(err) => err.line,
            })
            .collect();
        assert_eq!(lines, [2, 4, 7, 8]);
        let first = items[0].clone().expect("valid");
        assert_eq!(first.merchant_ref, "two\r\nlines");
        assert_eq!(first.raw, "G1,\"two\r\nlines\",1000,VND,2026-03-15T09:30:00+07:00,success,0");
        assert_eq!(
            items[2].clone().expect_err("6 fields").raw,
            "G3,pay-3,3000,VND,2026-03-15T09:30:00+07:00,\"suc\"\"cess\""
        );
    }

    // ---- other row rules ----

    #[test]
    fn kinds_ids_times() {
        let vnpay = mapping("vnpay");
        let file = |cells: &str| {
            format!(
                "TmnCode,TransactionNo,TxnRef,TransactionType,Amount,Fee,BankCode,PayDate,OriginalTransactionNo,Status\r\n{cells}\r\n"
            )
        };
        let err = single_error(&vnpay, &file("T,1,R,04,100000,0,NCB,15/03/2026 09:30:00,,Thanh cong"));
        assert_eq!(
            err.reason,
            "unknown transaction type \"04\" in TransactionType (expected one of \"01\", \"02\", \"03\")"
        );
        let err = single_error(&vnpay, &file("T,  ,R,01,100000,0,NCB,15/03/2026 09:30:00,,Thanh cong"));
        assert!(err.reason.starts_with("TransactionNo is empty"), "{}", err.reason);
        let long_id = "9".repeat(MAX_TXN_ID_CHARS + 1);
        let err =
            single_error(&vnpay, &file(&format!("T,{long_id},R,01,100000,0,NCB,15/03/2026 09:30:00,,Thanh cong")));
        assert_eq!(err.reason, "TransactionNo is longer than 100 characters");
        let long_ref = "r".repeat(MAX_MERCHANT_REF_CHARS + 1);
        let err =
            single_error(&vnpay, &file(&format!("T,1,{long_ref},01,100000,0,NCB,15/03/2026 09:30:00,,Thanh cong")));
        assert_eq!(err.reason, "TxnRef is longer than 200 characters");
        let err = single_error(&vnpay, &file("T,1,R,01,100000,0,NCB,2026-03-15 09:30:00,,Thanh cong"));
        assert_eq!(err.reason, "PayDate \"2026-03-15 09:30:00\": not a time in the format \"%d/%m/%Y %H:%M:%S\"");
        let err = single_error(&vnpay, &file("T,1,R,01,100000,0,NCB,31/02/2026 09:30:00,,Thanh cong"));
        assert!(err.reason.contains("not a time"), "{}", err.reason);
        let err = single_error(&vnpay, &file("T,1,R,01,100000,0,NCB,,,Thanh cong"));
        assert_eq!(err.reason, "PayDate is empty");
        // Values are trimmed; a status outside success_values is a row with success = false.
        let got =
            rows(&vnpay, file(" T , 7 , R ,01 , 100000 , 0 ,NCB, 15/03/2026 09:30:00 ,, Giao dich loi ").as_bytes());
        assert_eq!((got[0].provider_txn_id.as_str(), got[0].amount, got[0].success), ("7", 1_000, false));
        assert_eq!(got[0].status, "Giao dich loi");

        let bank = mapping("bank");
        let err = single_error(
            &bank,
            "bank,account,transaction_id,event_id,amount,fee,credited_at,description\r\nb,a,FT1,e,1000,0,2026-03-15 09:30,x\r\n",
        );
        assert!(err.reason.contains("not an RFC 3339 time"), "{}", err.reason);
    }

    #[test]
    fn raw_is_capped() {
        let long = "x".repeat(5_000);
        let file = format!(
            "bank,account,transaction_id,event_id,amount,fee,credited_at,description\r\nb,a,FT1,e,1000,0,2026-03-15T09:30:00+07:00,{long}\r\n"
        );
        let got = rows(&mapping("bank"), file.as_bytes());
        assert_eq!(got[0].raw.chars().count(), MAX_RAW_CHARS);
        assert!(got[0].raw.starts_with("b,a,FT1,e,1000,0,"));
        let multibyte = "đ".repeat(3_000);
        let got = rows(&mapping("bank"), file.replace(&long, &multibyte).as_bytes());
        assert_eq!(got[0].raw.chars().count(), MAX_RAW_CHARS);
    }

    #[test]
    fn other_delimiters_and_offsets_in_the_format() {
        let text = mapping_text(
            "delimiter = \";\"\ntime_format = \"%Y-%m-%d %H:%M:%S %z\"\nsuccess_values = []",
            "reference = [\"note\"]",
        );
        let m = SettlementMapping::from_toml(&text).expect("valid");
        let file = format!("id;ref;amount;at;note\nA1;r1;5000;2026-03-15 23:30:00 +0000;\"a;b {CODE}\"\n");
        let got = rows(&m, file.as_bytes());
        assert_eq!(got[0].paid_at, utc("2026-03-15T23:30:00Z"));
        assert_eq!(got[0].local_date, day(2026, 3, 16));
        assert_eq!(got[0].notice_code.as_deref(), Some(CODE));
        assert_eq!(got[0].raw, format!("A1;r1;5000;2026-03-15 23:30:00 +0000;\"a;b {CODE}\""));
    }

    /// Hands out `data`, then fails.
    struct Failing {
        data: Vec<u8>,
    }

    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.data.is_empty() {
                return Err(io::Error::other("the disk went away"));
            }
            let n = buf.len().min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data.drain(..n);
            Ok(n)
        }
    }

    #[test]
    fn input_failing_mid_way_ends_with_one_error() {
        let data = generic_file(&[&generic_line("1000", "0")]).into_bytes();
        let items: Vec<_> = SettlementReader::new(&mapping("generic"), Failing { data }).expect("header").collect();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].as_ref().map(|r| r.amount), Ok(1000));
        let err = items[1].clone().expect_err("I/O");
        assert!(err.reason.contains("the disk went away"), "{}", err.reason);
        let err = SettlementReader::new(&mapping("generic"), Failing { data: Vec::new() }).unwrap_err();
        assert!(matches!(err, FileError::Unreadable { line: 1, .. }), "{err:?}");
    }

    // ---- mappings ----

    fn mapping_text(top: &str, columns: &str) -> String {
        format!(
            "name = \"t\"\n{top}\n[columns]\nprovider_txn_id = \"id\"\nmerchant_ref = \"ref\"\namount = \"amount\"\npaid_at = \"at\"\n{columns}\n"
        )
    }

    const OK_TOP: &str = "time_format = \"rfc3339\"\nsuccess_values = []";

    #[test]
    fn mapping_validation_names_the_problem() {
        assert!(SettlementMapping::from_toml(&mapping_text(OK_TOP, "")).is_ok());
        let status = "status = \"st\"";
        let kind = "kind = \"k\"";
        let cases: Vec<(String, &str)> = vec![
            (mapping_text(&format!("{OK_TOP}\nextra = 1"), ""), "unknown field `extra`"),
            (mapping_text(OK_TOP, "colour = \"c\""), "unknown field `colour`"),
            (mapping_text(&format!("{OK_TOP}\ndelimiter = \"é\""), ""), "delimiter 'é'"),
            (mapping_text(&format!("{OK_TOP}\ndelimiter = \"\\\"\""), ""), "delimiter '\"'"),
            (mapping_text(&format!("{OK_TOP}\ndelimiter = \";;\""), ""), "delimiter"),
            (
                mapping_text(&format!("{OK_TOP}\nencoding = \"windows-1258\""), ""),
                "encoding \"windows-1258\" is not supported",
            ),
            (mapping_text(&format!("{OK_TOP}\namount_scale = 0"), ""), "amount_scale 0"),
            (mapping_text(&format!("{OK_TOP}\namount_scale = 250"), ""), "amount_scale 250"),
            (mapping_text(&format!("{OK_TOP}\namount_scale = -100"), ""), "amount_scale -100"),
            (mapping_text(&format!("{OK_TOP}\ntime_zone = \"GMT+7\""), ""), "time_zone \"GMT+7\""),
            (mapping_text(&format!("{OK_TOP}\ntime_zone = \"+7:00\""), ""), "time_zone"),
            (mapping_text(&format!("{OK_TOP}\ntime_zone = \"+15:00\""), ""), "time_zone"),
            (mapping_text("time_format = \"%Y-%m-%d\"\nsuccess_values = []", ""), "must give a full date and a time"),
            (mapping_text("time_format = \"%H:%M:%S\"\nsuccess_values = []", ""), "must give a full date and a time"),
            (mapping_text("time_format = \"%Y-%m-%d %H:%M %Z\"\nsuccess_values = []", ""), "must give a full date"),
            (mapping_text("time_format = \"%Y-%m-%d %H:%M %#z\"\nsuccess_values = []", ""), "%#z is not supported"),
            (mapping_text("time_format = \"%Y-%m-%d %Q\"\nsuccess_values = []", ""), "not a valid strftime format"),
            (mapping_text(OK_TOP, status), "success_values must not be empty"),
            (mapping_text("time_format = \"rfc3339\"\nsuccess_values = [\"ok\"]", ""), "success_values must be empty"),
            (
                mapping_text("time_format = \"rfc3339\"\nsuccess_values = [\" \"]", status),
                "success_values contains an empty value",
            ),
            (mapping_text(OK_TOP, kind), "payment_values must not be empty"),
            (mapping_text(&format!("{OK_TOP}\nrefund_values = [\"R\"]"), ""), "need columns.kind"),
            (mapping_text(&format!("{OK_TOP}\npayment_values = [\"P\"]\nrefund_values = [\"P\"]"), kind), "in both"),
            (mapping_text(OK_TOP, "refund_txn_id = \"rid\""), "refund_txn_id needs columns.kind"),
            (mapping_text(OK_TOP, "fee = \" \""), "columns.fee names an empty column"),
            (mapping_text(OK_TOP, "reference = [\"\"]"), "columns.reference names an empty column"),
            (mapping_text(&format!("{OK_TOP}\nfee_flat = -1"), ""), "fee_flat -1"),
            (mapping_text(&format!("{OK_TOP}\nfee_rate = \"1\""), ""), "fee_rate 1 must be"),
            (mapping_text(&format!("{OK_TOP}\nfee_rate = \"-0.01\""), ""), "fee_rate -0.01 must be"),
            (mapping_text(&format!("{OK_TOP}\nfee_rate = \"abc\""), ""), "not a decimal number"),
            (mapping_text(&format!("{OK_TOP}\nfee_rate = 0.011"), ""), "expected a string"),
            (mapping_text(OK_TOP, "").replace("name = \"t\"", "name = \"a b\""), "name \"a b\""),
            (mapping_text(OK_TOP, "").replace("amount = \"amount\"\n", ""), "missing field `amount`"),
        ];
        for (text, expected) in cases {
            let err = SettlementMapping::from_toml(&text).expect_err(expected);
            assert!(err.contains(expected), "expected {expected:?} in {err:?}");
        }
        for good in [
            format!("{OK_TOP}\namount_scale = 1000\ntime_zone = \"-05:30\"\nfee_rate = \"0.011\"\nfee_flat = 0"),
            "time_format = \"%d/%m/%Y %H:%M\"\nsuccess_values = []\nencoding = \"UTF-8\"\ndelimiter = \"\\t\""
                .to_owned(),
            "time_format = \"%Y-%m-%dT%H:%M:%S%.3f\"\nsuccess_values = []".to_owned(),
            "time_format = \"%Y-%m-%dT%H:%M:%S.%3f%:z\"\nsuccess_values = []".to_owned(),
        ] {
            SettlementMapping::from_toml(&mapping_text(&good, "")).expect(&good);
        }
    }

    #[test]
    fn a_mapping_built_by_hand_is_checked_by_the_reader() {
        let mut m = mapping("generic");
        m.amount_scale = 3;
        let err = SettlementReader::new(&m, GENERIC_HEADER.as_bytes()).unwrap_err();
        assert!(matches!(&err, FileError::InvalidMapping(reason) if reason.contains("amount_scale 3")), "{err:?}");
        assert!(m.validate().is_err());
    }

    #[test]
    fn expected_fees() {
        let with = |top: &str| SettlementMapping::from_toml(&mapping_text(&format!("{OK_TOP}\n{top}"), "")).expect(top);
        assert_eq!(with("").expected_fee(100_000), None);
        assert_eq!(with("fee_flat = 1000").expected_fee(100_000), Some(1_000));
        assert_eq!(with("fee_flat = 1000\nfee_rate = \"0.011\"").expected_fee(150_000), Some(1_000 + 1_650));
        // Half away from zero: 1,100 × 1.5% = 16.5 → 17; 1,000 × 1.5% = 15.
        let rate = with("fee_rate = \"0.015\"");
        assert_eq!(
            (rate.expected_fee(1_100), rate.expected_fee(1_000), rate.expected_fee(33)),
            (Some(17), Some(15), Some(0))
        );
        assert_eq!(rate.expected_fee(Vnd::MAX_AMOUNT.get()), Some(15_000_000_000_000));
        assert_eq!(rate.expected_fee(-1), None);
    }

    #[test]
    fn load_dir_names_the_bad_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = mapping_text(OK_TOP, "").replace("name = \"t\"", "name = \"a\"");
        std::fs::write(dir.path().join("a.toml"), &good).expect("write");
        std::fs::write(dir.path().join("notes.txt"), "not a mapping").expect("write");
        let loaded = SettlementMapping::load_dir(dir.path()).expect("loads");
        assert_eq!(loaded.keys().collect::<Vec<_>>(), ["a"]);

        std::fs::write(dir.path().join("b.toml"), good.replace("time_format", "tf")).expect("write");
        let err = SettlementMapping::load_dir(dir.path()).unwrap_err();
        assert!(err.contains("b.toml") && err.contains("unknown field `tf`"), "{err}");
        std::fs::write(dir.path().join("b.toml"), &good).expect("write");
        let err = SettlementMapping::load_dir(dir.path()).unwrap_err();
        assert!(err.contains("b.toml") && err.contains("differs from the file name"), "{err}");
        assert!(SettlementMapping::load_dir(&dir.path().join("absent")).unwrap_err().contains("absent"));
    }

    // ---- streaming and properties ----

    /// A generic file of `total` rows, produced one line at a time.
    struct Generated {
        next: u64,
        total: u64,
        line: Vec<u8>,
        at: usize,
    }

    impl Read for Generated {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.at == self.line.len() {
                self.line.clear();
                self.at = 0;
                if self.next == 0 {
                    self.line.extend_from_slice(GENERIC_HEADER.as_bytes());
                } else if self.next <= self.total {
                    let n = self.next;
                    let row = format!("GEN{n},pay-{n},{},VND,2026-03-15T09:30:00+07:00,success,0\r\n", 1_000 + n % 7);
                    self.line.extend_from_slice(row.as_bytes());
                } else {
                    return Ok(0);
                }
                self.next += 1;
            }
            let n = buf.len().min(self.line.len() - self.at);
            buf[..n].copy_from_slice(&self.line[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    #[test]
    fn streams_a_large_file() {
        const TOTAL: u64 = 200_000;
        let input = Generated { next: 0, total: TOTAL, line: Vec::new(), at: 0 };
        let (mut count, mut sum, mut last_line) = (0u64, 0i64, 0u64);
        for item in SettlementReader::new(&mapping("generic"), input).expect("header") {
            let row = item.expect("valid");
            count += 1;
            sum += row.amount;
            assert_eq!(row.line, last_line.max(1) + 1);
            last_line = row.line;
        }
        assert_eq!(count, TOTAL);
        assert_eq!(last_line, TOTAL + 1);
        assert_eq!(sum, (1..=TOTAL).map(|n| 1_000 + (n % 7) as i64).sum::<i64>());
    }

    fn check_items(items: impl Iterator<Item = Result<SettlementRow, RowError>>) {
        let mut last = 1;
        for item in items {
            let (line, raw) = match &item {
                Ok(row) => {
                    assert!(row.amount > 0 && row.amount <= Vnd::MAX_AMOUNT.get());
                    assert!(row.fee >= 0);
                    assert!(!row.provider_txn_id.is_empty());
                    (row.line, &row.raw)
                }
                Err(err) => (err.line, &err.raw),
            };
            assert!(line > last, "line {line} after {last}");
            assert!(raw.chars().count() <= MAX_RAW_CHARS);
            last = line;
        }
    }

    proptest! {
        #[test]
        fn amounts_round_trip(amount in 1i64..=1_000_000_000_000_000) {
            let file = generic_file(&[&generic_line(&amount.to_string(), &amount.to_string())]);
            let got = rows(&mapping("generic"), file.as_bytes());
            prop_assert_eq!((got[0].amount, got[0].fee), (amount, amount));
            let scaled = format!(
                "TmnCode,TransactionNo,TxnRef,TransactionType,Amount,Fee,BankCode,PayDate,OriginalTransactionNo,Status\r\n\
                 T,1,R,01,{}00,0,NCB,15/03/2026 09:30:00,,Thanh cong\r\n",
                amount
            );
            prop_assert_eq!(rows(&mapping("vnpay"), scaled.as_bytes())[0].amount, amount);
        }

        #[test]
        fn never_panics_on_arbitrary_bytes(tail in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut file = GENERIC_HEADER.as_bytes().to_vec();
            file.extend_from_slice(&tail);
            check_items(SettlementReader::new(&mapping("generic"), &file[..]).expect("header"));
            // The bytes alone, as a whole file, never panic either.
            if let Ok(reader) = SettlementReader::new(&mapping("bank"), &tail[..]) {
                check_items(reader);
            }
        }

        #[test]
        fn never_panics_on_csv_like_bytes(
            tail in proptest::collection::vec(
                proptest::sample::select(vec![b'1', b'0', b'a', b',', b'"', b'\r', b'\n', b' ', b'.', b'-', 0xff, 0xc3, b'T']),
                0..600,
            )
        ) {
            let mut file = GENERIC_HEADER.as_bytes().to_vec();
            file.extend_from_slice(generic_line("1000", "0").as_bytes());
            file.extend_from_slice(b"\r\n");
            file.extend_from_slice(&tail);
            check_items(SettlementReader::new(&mapping("generic"), &file[..]).expect("header"));
        }
    }
}

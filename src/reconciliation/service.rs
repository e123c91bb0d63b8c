//! Running a reconciliation: a settlement file already on disk is read in a blocking thread and
//! streamed, in batches, to the store, which matches, classifies and settles it in one
//! transaction.
//!
//! Invariants: the file is never held in memory whole (batches of [`BATCH_ROWS`] rows, at most
//! [`BATCH_QUEUE`] batches in flight); a file-level problem (unreadable header, another
//! provider's format, no row of the settlement date, too many rows) rejects the whole file and
//! writes nothing; so does a file with no readable row of the settlement date (it must not
//! supersede a run that settled money) and a file whose input fails before its end; a bad row is
//! reported with its line number and the rest is reconciled; a reader that stops without saying
//! so (it panicked) makes the store roll the whole run back.

use std::collections::BTreeMap;
use std::io::{BufReader, Read};
use std::path::Path;

use chrono::{NaiveDate, NaiveTime, TimeZone};
use sha2::{Digest, Sha256};

use super::reader::{FileError, RowError, SettlementMapping, SettlementReader};
use crate::config::ReconciliationConfig;
use crate::store::reconciliation::{RunInput, RunOutcome, RunSpec};
use crate::store::{Store, StoreError};

/// Rows per batch sent to the store.
pub const BATCH_ROWS: usize = 1_000;
/// Batches read ahead of the store.
pub const BATCH_QUEUE: usize = 4;

/// The settlement-file mappings, by name.
#[derive(Debug, Clone, Default)]
pub struct Mappings(pub BTreeMap<String, SettlementMapping>);

impl Mappings {
    /// Loads `reconciliation.mappings_dir` and checks that every provider's format exists.
    pub fn load(config: &ReconciliationConfig) -> Result<Mappings, String> {
        let mappings = SettlementMapping::load_dir(&config.mappings_dir)?;
        for (provider, format) in &config.formats {
            if !mappings.contains_key(format) {
                return Err(format!(
                    "reconciliation.formats.{provider} names the mapping {format:?}, which is not in {}",
                    config.mappings_dir.display()
                ));
            }
        }
        Ok(Mappings(mappings))
    }
}

/// What a reconciliation request asks.
#[derive(Debug, Clone)]
pub struct RunRequest<'a> {
    pub provider: &'a str,
    pub settlement_date: NaiveDate,
    /// A mapping name; the provider's configured format when absent.
    pub format: Option<&'a str>,
    pub actor: &'a str,
}

/// Why a file was not reconciled. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0:?} is not a provider (vnpay, momo, zalopay, vietqr) or has no settlement format configured")]
    UnknownProvider(String),
    #[error("no settlement format named {0:?}")]
    UnknownFormat(String),
    #[error("the file is empty")]
    Empty,
    #[error("the file is larger than {0} bytes (reconciliation.max_file_bytes)")]
    TooLarge(u64),
    #[error("{0}")]
    File(FileError),
    #[error("{0}")]
    Rejected(String),
    #[error(
        "another run or resolution touching the same payments was written at the same time; nothing of this run was written — send the file again"
    )]
    Busy,
    #[error("cannot read the file: {0}")]
    Io(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A file's SHA-256 (hex) and size, read in chunks.
pub fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), bytes))
}

/// The UTC bounds of a GMT+7 day.
pub fn day_bounds(date: NaiveDate) -> (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) {
    let offset = crate::clock::vn_offset();
    let start = |d: NaiveDate| {
        offset
            .from_local_datetime(&d.and_time(NaiveTime::MIN))
            .single()
            .map(|t| t.with_timezone(&chrono::Utc))
            .unwrap_or_default()
    };
    (start(date), start(date.succ_opt().unwrap_or(date)))
}

/// Reconciles the file at `path` (whose SHA-256 and size the caller computed while receiving it).
pub async fn reconcile_file(
    store: &Store,
    config: &ReconciliationConfig,
    mappings: &Mappings,
    request: &RunRequest<'_>,
    path: &Path,
    sha256: &str,
    bytes: u64,
) -> Result<RunOutcome, RunError> {
    let format = match request.format {
        Some(f) => f.to_string(),
        None => config
            .formats
            .get(request.provider)
            .cloned()
            .ok_or_else(|| RunError::UnknownProvider(request.provider.to_string()))?,
    };
    let mapping = mappings.0.get(&format).cloned().ok_or_else(|| RunError::UnknownFormat(format.clone()))?;
    if !crate::config::PROVIDER_NAMES.contains(&request.provider) {
        return Err(RunError::UnknownProvider(request.provider.to_string()));
    }
    if bytes == 0 {
        return Err(RunError::Empty);
    }
    if bytes > config.max_file_bytes {
        return Err(RunError::TooLarge(config.max_file_bytes));
    }
    // The same file again is the same run: answer without reading it.
    if let Some(run) = store.find_run_by_file(request.provider, request.settlement_date, sha256).await? {
        return Ok(RunOutcome::Existing(run));
    }
    let file = std::fs::File::open(path).map_err(|e| RunError::Io(e.kind().to_string()))?;
    let header_mapping = mapping.clone();
    let reader = tokio::task::spawn_blocking(move || {
        SettlementReader::new(&header_mapping, BufReader::with_capacity(256 * 1024, file))
    })
    .await
    .map_err(|e| RunError::Io(e.to_string()))?
    .map_err(|e| match e {
        FileError::Empty => RunError::Empty,
        other => RunError::File(other),
    })?;

    let (sender, receiver) = tokio::sync::mpsc::channel(BATCH_QUEUE);
    let date = request.settlement_date;
    let max_rows = config.max_rows;
    let producer = tokio::task::spawn_blocking(move || read_rows(reader, date, max_rows, sender));
    let expected_fee = move |amount: i64| mapping.expected_fee(amount);
    let spec = RunSpec {
        id: format!("rr_{}", uuid::Uuid::now_v7().simple()),
        provider: request.provider,
        settlement_date: date,
        file_sha256: sha256,
        file_bytes: bytes as i64,
        format: &format,
        created_by: request.actor,
        match_window: chrono::Duration::hours(config.match_window_hours as i64),
        expected_fee: &expected_fee,
        day: day_bounds(date),
    };
    let outcome = store.run_reconciliation(&spec, receiver).await;
    // The store has stopped reading; the reader stops at its next send.
    let _ = producer.await;
    match outcome {
        Ok(RunOutcome::Rejected(reason)) => Err(RunError::Rejected(reason)),
        Ok(outcome) => Ok(outcome),
        // Someone committed a run for the same provider and date meanwhile.
        Err(StoreError::Conflict(_)) => {
            match store.find_run_by_file(request.provider, request.settlement_date, sha256).await? {
                Some(run) => Ok(RunOutcome::Existing(run)),
                None => Err(RunError::Busy),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Reads every row, turning rows of another date into row errors, and sends them in batches.
fn read_rows<R: Read>(
    mut reader: SettlementReader<R>,
    date: NaiveDate,
    max_rows: u64,
    sender: tokio::sync::mpsc::Sender<RunInput>,
) {
    let mut batch = Vec::with_capacity(BATCH_ROWS);
    let mut rows = 0u64;
    let mut on_date = 0u64;
    let mut first_error: Option<RowError> = None;
    let mut other_dates: BTreeMap<NaiveDate, u64> = BTreeMap::new();
    for item in reader.by_ref() {
        rows += 1;
        if rows > max_rows {
            let _ = sender.blocking_send(RunInput::Reject(format!(
                "the file has more than {max_rows} rows (reconciliation.max_rows); split it or raise the limit"
            )));
            return;
        }
        let item = match item {
            Ok(row) if row.local_date != date => {
                *other_dates.entry(row.local_date).or_default() += 1;
                Err(RowError {
                    line: row.line,
                    reason: format!("the row is dated {}, not the settlement date {date}", row.local_date),
                    raw: row.raw,
                })
            }
            Ok(row) => {
                on_date += 1;
                Ok(row)
            }
            Err(e) => {
                if first_error.is_none() {
                    first_error = Some(e.clone());
                }
                Err(e)
            }
        };
        batch.push(item);
        if batch.len() == BATCH_ROWS && sender.blocking_send(RunInput::Rows(std::mem::take(&mut batch))).is_err() {
            return;
        }
    }
    if let Some(failed) = reader.input_failed() {
        let _ = sender.blocking_send(RunInput::Reject(format!(
            "the file could not be read to its end (line {}: {}); nothing was reconciled",
            failed.line, failed.reason
        )));
        return;
    }
    if on_date == 0 && !other_dates.is_empty() {
        let dates: Vec<String> = other_dates.iter().map(|(d, n)| format!("{d} ({n} rows)")).collect();
        let _ = sender.blocking_send(RunInput::Reject(format!(
            "no row of the file is dated {date}; its rows are dated {} — is this the file of another day?",
            dates.join(", ")
        )));
        return;
    }
    if on_date == 0 {
        // Nothing to reconcile: a header alone, or only unreadable rows. Such a file must not
        // supersede a run that settled money.
        let reason = match first_error {
            Some(e) => format!(
                "none of the file's {rows} rows can be read (line {}: {}); nothing was reconciled",
                e.line, e.reason
            ),
            None => "the file has no data rows; nothing was reconciled".to_string(),
        };
        let _ = sender.blocking_send(RunInput::Reject(reason));
        return;
    }
    if !batch.is_empty() && sender.blocking_send(RunInput::Rows(batch)).is_err() {
        return;
    }
    let _ = sender.blocking_send(RunInput::End);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gmt7_day_starts_at_17_utc_the_day_before() {
        let (start, end) = day_bounds(NaiveDate::from_ymd_opt(2026, 11, 26).unwrap());
        assert_eq!(start.to_rfc3339(), "2026-11-25T17:00:00+00:00");
        assert_eq!(end.to_rfc3339(), "2026-11-26T17:00:00+00:00");
    }
}

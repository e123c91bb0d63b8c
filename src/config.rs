//! Layered configuration.
//!
//! Order (later wins): the defaults compiled in from `config/default.toml`, the file
//! `<config dir>/default.toml`, `<config dir>/<PAYGATE_ENV>.toml`, then environment variables
//! `PAYGATE_<SECTION>__<KEY>`. A secret may instead be given as `PAYGATE_<SECTION>__<KEY>_FILE`
//! naming a file that holds it.
//!
//! Invariants: a loaded [`Config`] has been validated — every value is usable as is; secrets are
//! held in [`SecretString`] and never appear in `Debug` output or logs; a bad value is reported as
//! one [`ConfigError`] naming the key and what is wrong.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::providers::protocol::momo::MomoCredentials;
use crate::providers::protocol::vnpay::VnpayCredentials;
use crate::providers::protocol::zalopay::ZalopayCredentials;

/// The defaults, compiled into the binary so it runs without any file present.
const DEFAULTS: &str = include_str!("../config/default.toml");

/// Environment variables with this prefix and a `__` section separator configure paygate.
const ENV_PREFIX: &str = "PAYGATE_";

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub idempotency: IdempotencyConfig,
    pub telemetry: TelemetryConfig,
    pub obligations: ObligationsConfig,
    pub providers: ProvidersConfig,
    pub sandbox: SandboxSettings,
    pub webhooks: WebhooksConfig,
    pub ledger: LedgerConfig,
    pub reconciliation: ReconciliationConfig,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WebhooksConfig {
    pub endpoints: Vec<WebhookEndpoint>,
    pub max_backoff_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WebhookEndpoint {
    /// Unique name, recorded with each delivery.
    pub name: String,
    pub url: String,
    pub secret: SecretString,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LedgerConfig {
    pub seal_interval_ms: u64,
}

/// Settlement files and their reconciliation.
#[derive(Debug, Clone, Deserialize)]
pub struct ReconciliationConfig {
    /// Folder of settlement-file mappings (`*.toml`), loaded and checked at start-up.
    pub mappings_dir: PathBuf,
    /// The mapping used for each provider's files (`vietqr` files come from the collecting bank).
    pub formats: BTreeMap<String, String>,
    /// Largest settlement file accepted, bytes.
    pub max_file_bytes: u64,
    /// Most data rows accepted in one file.
    pub max_rows: u64,
    /// A row matched by amount and notice code must be this close to the payment's creation.
    pub match_window_hours: u64,
    /// Time allowed for an upload and its run (instead of server.request_timeout_secs).
    pub request_timeout_secs: u64,
}

/// The providers a payer can choose, and how to reach them.
#[derive(Debug, Clone, Deserialize)]
pub struct ProvidersConfig {
    pub enabled: Vec<String>,
    pub return_url_allowlist: Vec<String>,
    pub payment_ttl_secs: u64,
    pub status_poll_after_secs: u64,
    pub status_poll_interval_secs: u64,
    pub http_timeout_secs: u64,
    pub vnpay: VnpayConfig,
    pub momo: MomoConfig,
    pub zalopay: ZalopayConfig,
    pub vietqr: VietQrConfig,
    pub banks: BTreeMap<String, BankConfig>,
}

/// The provider names paygate knows.
pub const PROVIDER_NAMES: [&str; 4] = ["vnpay", "momo", "zalopay", "vietqr"];

#[derive(Debug, Clone, Deserialize)]
pub struct VnpayConfig {
    /// Empty: the in-process sandbox.
    pub base_url: String,
    #[serde(flatten)]
    pub credentials: VnpayCredentials,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MomoConfig {
    pub base_url: String,
    #[serde(flatten)]
    pub credentials: MomoCredentials,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ZalopayConfig {
    pub base_url: String,
    #[serde(flatten)]
    pub credentials: ZalopayCredentials,
}

#[derive(Debug, Clone, Deserialize)]
pub struct VietQrConfig {
    /// The partner bank (a key of `providers.banks`) whose notifications confirm transfers.
    pub bank: String,
    /// NAPAS acquirer BIN of the collection account's bank.
    pub bin: String,
    pub account: String,
    pub account_name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BankConfig {
    /// Active signing secrets of `Paygate-Signature` (several during rotation).
    pub secrets: Vec<SecretString>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SandboxSettings {
    /// Mount the provider simulators at `/sandbox`.
    pub enabled: bool,
    /// While enabled, the sandbox is also the partner bank `sandbox`, signing with this.
    pub bank_secret: SecretString,
}

/// The partner bank the sandbox plays.
pub const SANDBOX_BANK: &str = "sandbox";

#[derive(Debug, Clone, Deserialize)]
pub struct ObligationsConfig {
    /// Folder of rule tables (`*.toml`).
    pub rules_dir: PathBuf,
    pub quote_validity_hours: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServerConfig {
    pub bind: SocketAddr,
    pub public_base_url: String,
    pub request_timeout_secs: u64,
    pub body_limit_bytes: usize,
    pub shutdown_grace_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseConfig {
    /// May carry a password, hence secret.
    pub url: SecretString,
    pub max_connections: u32,
    pub acquire_timeout_secs: u64,
    pub migrate_on_start: bool,
    /// Tasks that apply payment updates (callbacks, expiries) in batches; see
    /// [`crate::store::group_commit`]. Unset: [`DatabaseConfig::payment_writers`] picks by backend.
    #[serde(rename = "payment_writers")]
    pub payment_writers_setting: Option<usize>,
    /// The most updates one batch (one transaction) applies.
    pub payment_batch_max: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct IdempotencyConfig {
    pub ttl_secs: u64,
    pub lock_timeout_secs: u64,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TelemetryConfig {
    pub log_format: LogFormat,
    pub log_level: String,
    pub otlp_endpoint: String,
    pub service_name: String,
}

/// A configuration value that cannot be used. Displayed as one line: the key, where it came
/// from, and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {key}{source_note}: {problem}")]
pub struct ConfigError {
    pub key: String,
    source_note: String,
    pub problem: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError { key: key.into(), source_note: String::new(), problem: problem.into() }
    }
}

impl ServerConfig {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }
}

impl DatabaseConfig {
    /// Which backend the URL names, without exposing the URL.
    pub fn backend_name(&self) -> &'static str {
        if self.url.expose_secret().starts_with("postgres") { "postgres" } else { "sqlite" }
    }

    /// The payment writers to start: as configured, else one on SQLite (it has one writer, and
    /// two would only split its batches) and two on PostgreSQL (one batch gathers and reads
    /// while the other commits; the best of 1, 2, 4 and 8 in docs/callback-benchmark.md).
    pub fn payment_writers(&self) -> usize {
        self.payment_writers_setting.unwrap_or(if self.backend_name() == "postgres" { 2 } else { 1 })
    }
}

impl Config {
    /// Loads the configuration the way `paygate` does at start-up: config dir from
    /// `PAYGATE_CONFIG_DIR` (default `config`), environment name from `PAYGATE_ENV`.
    pub fn load() -> Result<Config, ConfigError> {
        let dir = std::env::var_os("PAYGATE_CONFIG_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("config"));
        let env_name = std::env::var("PAYGATE_ENV").ok().filter(|s| !s.is_empty());
        let config = Self::from_figment(Self::figment(&dir, env_name.as_deref())?)?;
        config.check_environment(env_name.as_deref())?;
        Ok(config)
    }

    /// In production the provider simulators must not be mounted: with them, anyone could sign a
    /// partner-bank credit with the sandbox's published secret. A production file that forgets
    /// `[sandbox] enabled = false` is refused rather than inheriting the development default.
    fn check_environment(&self, env_name: Option<&str>) -> Result<(), ConfigError> {
        if env_name == Some("production") && self.sandbox.enabled {
            return Err(ConfigError::new("sandbox.enabled", "must be false when PAYGATE_ENV=production"));
        }
        Ok(())
    }

    /// The compiled-in defaults alone (used by tests, which then override fields).
    pub fn defaults() -> Config {
        Self::from_figment(Figment::from(Toml::string(DEFAULTS))).expect("compiled-in defaults are valid")
    }

    fn figment(dir: &Path, env_name: Option<&str>) -> Result<Figment, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULTS)).merge(Toml::file(dir.join("default.toml")));
        if let Some(name) = env_name {
            let file = dir.join(format!("{name}.toml"));
            if !file.is_file() {
                return Err(ConfigError::new(
                    "PAYGATE_ENV",
                    format!("no configuration file {} for environment {name:?}", file.display()),
                ));
            }
            figment = figment.merge(Toml::file(file));
        }
        // Only keys with a section separator are configuration; this leaves PAYGATE_ENV,
        // PAYGATE_CONFIG_DIR and unrelated PAYGATE_* variables alone.
        figment = figment.merge(
            Env::prefixed(ENV_PREFIX)
                .filter(|key| {
                    let key = key.as_str().to_ascii_lowercase();
                    key.contains("__") && !key.ends_with("_file")
                })
                .split("__"),
        );
        for (name, path) in std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v))) {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else { continue };
            let Some(key) = rest.strip_suffix("_FILE") else { continue };
            if !key.contains("__") {
                continue;
            }
            let dotted = key.to_ascii_lowercase().replace("__", ".");
            let text = std::fs::read_to_string(&path).map_err(|e| {
                ConfigError::new(&dotted, format!("cannot read secret file named by {name}: {}", e.kind()))
            })?;
            if dotted.ends_with(".secrets") {
                // A list of secrets (rotation): one per line.
                let list: Vec<String> =
                    text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect();
                figment = figment.merge((dotted, list));
            } else {
                figment = figment.merge((dotted, text.trim_end_matches(['\r', '\n']).to_string()));
            }
        }
        Ok(figment)
    }

    fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        let config: Config = figment.extract().map_err(|e| {
            let e = e.into_iter().next().expect("figment error has at least one entry");
            let key = if e.path.is_empty() { "(root)".to_string() } else { e.path.join(".") };
            let source_note = match &e.metadata {
                Some(meta) if meta.name.contains("environment") => {
                    format!(" (from {ENV_PREFIX}{})", e.path.join("__").to_ascii_uppercase())
                }
                Some(meta) => match &meta.source {
                    Some(figment::Source::File(path)) => format!(" (in {})", path.display()),
                    _ => String::new(),
                },
                _ => String::new(),
            };
            ConfigError { key, source_note, problem: e.kind.to_string() }
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let url = self.database.url.expose_secret();
        if !(url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(ConfigError::new(
                "database.url",
                "must start with sqlite: or postgres:// (the value is not shown: it may hold a password)",
            ));
        }
        if self.database.max_connections < 2 {
            return Err(ConfigError::new(
                "database.max_connections",
                "must be at least 2 (a reconciliation run reads ahead on a second connection)",
            ));
        }
        if self.database.payment_writers_setting.is_some_and(|w| w == 0 || w > 16) {
            return Err(ConfigError::new("database.payment_writers", "must be between 1 and 16"));
        }
        if self.database.payment_batch_max == 0 || self.database.payment_batch_max > 5000 {
            return Err(ConfigError::new("database.payment_batch_max", "must be between 1 and 5000"));
        }
        if self.database.acquire_timeout_secs == 0 {
            return Err(ConfigError::new("database.acquire_timeout_secs", "must be at least 1"));
        }
        if !self.server.public_base_url.is_empty() && reqwest::Url::parse(&self.server.public_base_url).is_err() {
            return Err(ConfigError::new(
                "server.public_base_url",
                format!("{:?} is not an absolute URL", self.server.public_base_url),
            ));
        }
        if self.server.request_timeout_secs == 0 {
            return Err(ConfigError::new("server.request_timeout_secs", "must be at least 1"));
        }
        if self.server.body_limit_bytes < 1024 {
            return Err(ConfigError::new("server.body_limit_bytes", "must be at least 1024"));
        }
        if self.idempotency.ttl_secs == 0 {
            return Err(ConfigError::new("idempotency.ttl_secs", "must be at least 1"));
        }
        if self.idempotency.lock_timeout_secs <= self.server.request_timeout_secs {
            return Err(ConfigError::new(
                "idempotency.lock_timeout_secs",
                "must be longer than server.request_timeout_secs",
            ));
        }
        if self.obligations.quote_validity_hours == 0 || self.obligations.quote_validity_hours > 24 * 366 {
            return Err(ConfigError::new("obligations.quote_validity_hours", "must be between 1 and 8784 (a year)"));
        }
        self.validate_providers()?;
        let mut names = std::collections::BTreeSet::new();
        for (i, e) in self.webhooks.endpoints.iter().enumerate() {
            if e.name.is_empty() || !names.insert(e.name.clone()) {
                return Err(ConfigError::new(format!("webhooks.endpoints[{i}].name"), "must be unique and not empty"));
            }
            if reqwest::Url::parse(&e.url).is_err() {
                return Err(ConfigError::new(format!("webhooks.endpoints[{i}].url"), "is not an absolute URL"));
            }
            if e.secret.expose_secret().len() < 16 {
                return Err(ConfigError::new(
                    format!("webhooks.endpoints[{i}].secret"),
                    "must be 16 characters or more",
                ));
            }
        }
        let r = &self.reconciliation;
        if r.max_file_bytes < 1024 {
            return Err(ConfigError::new("reconciliation.max_file_bytes", "must be at least 1024"));
        }
        if r.max_rows == 0 {
            return Err(ConfigError::new("reconciliation.max_rows", "must be at least 1"));
        }
        if r.match_window_hours == 0 || r.match_window_hours > 24 * 31 {
            return Err(ConfigError::new("reconciliation.match_window_hours", "must be between 1 and 744 (a month)"));
        }
        if r.request_timeout_secs == 0 || r.request_timeout_secs >= self.idempotency.lock_timeout_secs.max(3600) {
            return Err(ConfigError::new("reconciliation.request_timeout_secs", "must be between 1 and 3599"));
        }
        if self.ledger.seal_interval_ms == 0 {
            return Err(ConfigError::new("ledger.seal_interval_ms", "must be at least 1"));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.telemetry.log_level).is_err() {
            return Err(ConfigError::new(
                "telemetry.log_level",
                format!("{:?} is not a valid tracing filter", self.telemetry.log_level),
            ));
        }
        if !self.telemetry.otlp_endpoint.is_empty() && reqwest::Url::parse(&self.telemetry.otlp_endpoint).is_err() {
            return Err(ConfigError::new(
                "telemetry.otlp_endpoint",
                format!("{:?} is not an absolute URL", self.telemetry.otlp_endpoint),
            ));
        }
        Ok(())
    }
}

impl Config {
    /// The configured partner banks, plus the sandbox's bank while the sandbox is on.
    pub fn partner_banks(&self) -> BTreeMap<String, BankConfig> {
        let mut banks = self.providers.banks.clone();
        if self.sandbox.enabled {
            banks.insert(SANDBOX_BANK.to_string(), BankConfig { secrets: vec![self.sandbox.bank_secret.clone()] });
        }
        banks
    }

    fn validate_providers(&self) -> Result<(), ConfigError> {
        let p = &self.providers;
        for name in &p.enabled {
            if !PROVIDER_NAMES.contains(&name.as_str()) {
                return Err(ConfigError::new(
                    "providers.enabled",
                    format!("unknown provider {name:?}; known: {}", PROVIDER_NAMES.join(", ")),
                ));
            }
        }
        for prefix in &p.return_url_allowlist {
            if reqwest::Url::parse(prefix).is_err() {
                return Err(ConfigError::new(
                    "providers.return_url_allowlist",
                    format!("{prefix:?} is not an absolute URL"),
                ));
            }
        }
        if p.payment_ttl_secs < 60 {
            return Err(ConfigError::new("providers.payment_ttl_secs", "must be at least 60"));
        }
        if p.status_poll_interval_secs == 0 {
            return Err(ConfigError::new("providers.status_poll_interval_secs", "must be at least 1"));
        }
        if p.http_timeout_secs == 0 || p.http_timeout_secs >= self.server.request_timeout_secs {
            return Err(ConfigError::new(
                "providers.http_timeout_secs",
                "must be at least 1 and shorter than server.request_timeout_secs",
            ));
        }
        for (key, url) in [("vnpay", &p.vnpay.base_url), ("momo", &p.momo.base_url), ("zalopay", &p.zalopay.base_url)] {
            if url.is_empty() && !self.sandbox.enabled && p.enabled.iter().any(|n| n == key) {
                return Err(ConfigError::new(
                    format!("providers.{key}.base_url"),
                    "must be set when the sandbox is disabled (an empty base_url means the sandbox)",
                ));
            }
            if !url.is_empty() && reqwest::Url::parse(url).is_err() {
                return Err(ConfigError::new(
                    format!("providers.{key}.base_url"),
                    format!("{url:?} is not an absolute URL (leave it empty for the sandbox)"),
                ));
            }
        }
        if p.vnpay.credentials.tmn_code.is_empty() {
            return Err(ConfigError::new("providers.vnpay.tmn_code", "must not be empty"));
        }
        if !self.sandbox.enabled {
            let enabled = |n: &str| p.enabled.iter().any(|e| e == n);
            let sandbox_secrets = [
                ("providers.vnpay.hash_secret", enabled("vnpay"), &p.vnpay.credentials.hash_secret),
                ("providers.momo.secret_key", enabled("momo"), &p.momo.credentials.secret_key),
                ("providers.zalopay.key1", enabled("zalopay"), &p.zalopay.credentials.key1),
                ("providers.zalopay.key2", enabled("zalopay"), &p.zalopay.credentials.key2),
            ];
            for (key, on, secret) in sandbox_secrets {
                if on && secret.expose_secret().starts_with("sandbox-") {
                    return Err(ConfigError::new(key, "is still the sandbox's value; set the real secret"));
                }
            }
            for (name, bank) in &self.partner_banks() {
                if bank.secrets.iter().any(|s| s.expose_secret().starts_with("sandbox-")) {
                    return Err(ConfigError::new(
                        format!("providers.banks.{name}.secrets"),
                        "holds the sandbox's value; set the real secret",
                    ));
                }
            }
        }
        let banks = self.partner_banks();
        for (name, bank) in &banks {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
                return Err(ConfigError::new(
                    format!("providers.banks.{name}"),
                    "bank names are lowercase letters, digits and '-'",
                ));
            }
            if bank.secrets.is_empty() || bank.secrets.iter().any(|s| s.expose_secret().len() < 16) {
                return Err(ConfigError::new(
                    format!("providers.banks.{name}.secrets"),
                    "needs at least one secret, each of 16 characters or more",
                ));
            }
        }
        if p.enabled.iter().any(|n| n == "vietqr") {
            if !banks.contains_key(&p.vietqr.bank) {
                return Err(ConfigError::new(
                    "providers.vietqr.bank",
                    format!("{:?} is not a configured partner bank (providers.banks)", p.vietqr.bank),
                ));
            }
            if p.vietqr.bin.len() != 6 || !p.vietqr.bin.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ConfigError::new("providers.vietqr.bin", "must be 6 digits"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_readme() {
        let c = Config::defaults();
        assert_eq!(c.server.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(c.database.url.expose_secret(), "sqlite://data/paygate.db");
        assert_eq!(c.idempotency.ttl_secs, 86_400);
    }

    #[test]
    fn secrets_do_not_print() {
        let c = Config::defaults();
        assert!(!format!("{c:?}").contains("paygate.db"));
    }

    #[test]
    fn production_refuses_the_sandbox() {
        let mut c = Config::defaults();
        assert!(c.sandbox.enabled, "the development default");
        assert_eq!(c.check_environment(Some("production")).unwrap_err().key, "sandbox.enabled");
        assert!(c.check_environment(None).is_ok() && c.check_environment(Some("staging")).is_ok());
        c.sandbox.enabled = false;
        assert!(c.check_environment(Some("production")).is_ok());
    }

    #[test]
    fn bad_value_names_the_key() {
        let f = Figment::from(Toml::string(DEFAULTS)).merge(("server.bind", "not-an-address"));
        let err = Config::from_figment(f).unwrap_err();
        assert_eq!(err.key, "server.bind");
        assert!(err.to_string().starts_with("configuration error: server.bind"), "{err}");
    }
}

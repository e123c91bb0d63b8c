//! Rebuilds when a migration is added or changed: `sqlx::migrate!` embeds the `migrations/`
//! directories at compile time, and cargo does not know the macro reads them.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}

//! Rebuilds the crate when a migration is added or changed: `sqlx::migrate!` embeds the files at
//! compile time, and without this a new file alone would not reach the binary.

fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}

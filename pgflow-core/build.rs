//! Rebuilds the crate when a migration is added or changed: the migrations
//! are embedded by `sqlx::migrate!("../migrations")`.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}

//! Defines `cfg(fault_injection)`: the crash points tests inject, compiled only into debug
//! builds with the `fault-injection` feature (never into a release). Shared by every crate
//! that has crash points (their Cargo.toml names this file as `build`). For the shared crate
//! it also rebuilds when a migration file is added.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(fault_injection)");
    // Runs again only when this file changes (the cfg depends on nothing else the fingerprint
    // does not already hold). Other crates name it by its path from their own directory: a
    // path that does not exist would make cargo run it, and rebuild the crate, every time.
    for script in ["build.rs", "../../shared/build.rs"] {
        if std::path::Path::new(script).is_file() {
            println!("cargo::rerun-if-changed={script}");
            break;
        }
    }
    // The shared crate embeds `migrations/` (sqlx::migrate!): rebuild when a file is added.
    if std::path::Path::new("migrations").is_dir() {
        println!("cargo::rerun-if-changed=migrations");
    }
    let feature = std::env::var_os("CARGO_FEATURE_FAULT_INJECTION").is_some();
    let debug = std::env::var_os("CARGO_CFG_DEBUG_ASSERTIONS").is_some();
    if feature && debug {
        println!("cargo::rustc-cfg=fault_injection");
    }
}

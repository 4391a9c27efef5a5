//! Fetches the official socket.io-client bundle for the demo page with `npm ci`, from
//! the lockfile in `demo/`, into OUT_DIR (never into the source tree), so that
//! `cargo run --release` is the only step a new user takes. The bundle is embedded in
//! the binary.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=demo/package.json");
    println!("cargo:rerun-if-changed=demo/package-lock.json");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let npm_dir = out.join("demo-npm");
    let bundle = npm_dir.join("node_modules/socket.io-client/dist/socket.io.min.js");
    let lock_src = Path::new("demo/package-lock.json");
    let lock_dst = npm_dir.join("package-lock.json");
    let up_to_date = bundle.exists() && std::fs::read(lock_src).ok() == std::fs::read(&lock_dst).ok();
    if !up_to_date {
        std::fs::create_dir_all(&npm_dir).expect("create OUT_DIR/demo-npm");
        std::fs::copy("demo/package.json", npm_dir.join("package.json")).expect("copy demo/package.json");
        std::fs::copy(lock_src, &lock_dst).expect("copy demo/package-lock.json");
        let status = Command::new("npm")
            .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&npm_dir)
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => panic!("`npm ci` for the demo's socket.io-client failed ({s}); is the npm registry reachable?"),
            Err(e) => panic!("could not run npm to fetch the demo's socket.io-client ({e}); install Node.js 18+ with npm"),
        }
    }
    assert!(bundle.exists(), "npm ci did not produce {}", bundle.display());
    let dst = out.join("socket.io.min.js");
    std::fs::copy(&bundle, &dst).expect("copy the client bundle into OUT_DIR");
}

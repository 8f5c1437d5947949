//! Build script: makes the web page's npm packages available to the binary.
//!
//! The page (`web/`) uses xterm.js and its fit addon from the npm registry. They are not committed
//! and not loaded from a CDN: this script installs them with `npm ci` (from the committed
//! `package-lock.json`, so the bytes are pinned) when `web/node_modules` lacks them, and copies the
//! files the page needs into `OUT_DIR`, where `src/web.rs` embeds them with `include_str!`. A fresh
//! checkout therefore builds with one `cargo build`, given Node.js and npm.

use std::env;
use std::fs::{self, File};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Files taken from `web/node_modules`: (path inside node_modules, name in `OUT_DIR`).
const VENDORED: [(&str, &str); 3] = [
    ("@xterm/xterm/lib/xterm.mjs", "xterm.js"),
    ("@xterm/xterm/css/xterm.css", "xterm.css"),
    ("@xterm/addon-fit/lib/addon-fit.mjs", "addon-fit.js"),
];

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let web = manifest_dir.join("web");
    let node_modules = web.join("node_modules");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));

    // Rerun only when the pinned dependencies change or a vendored file changes or disappears
    // (a missing file counts as changed, so deleting node_modules reinstalls it). The page's own
    // sources are tracked by `include_str!` in src/web.rs, not here.
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=web/package.json");
    println!("cargo:rerun-if-changed=web/package-lock.json");
    println!("cargo:rerun-if-env-changed=AETHER_NPM");
    for (src, _) in VENDORED {
        println!("cargo:rerun-if-changed=web/node_modules/{src}");
    }

    // Two builds with different target directories can run this script at the same time; an
    // exclusive lock on package.json keeps their `npm ci` runs (which wipe node_modules) apart.
    let lock = File::open(web.join("package.json")).expect("open gateway/web/package.json");
    lock.lock().expect("lock gateway/web/package.json");

    if VENDORED
        .iter()
        .any(|(src, _)| !node_modules.join(src).is_file())
    {
        npm_ci(&web);
    }

    for (src, dst) in VENDORED {
        let from = node_modules.join(src);
        let text =
            fs::read_to_string(&from).unwrap_or_else(|e| panic!("read {}: {e}", from.display()));
        // The packages ship without their source maps' targets under our URLs; dropping the
        // comment keeps browsers from requesting a map that would 404.
        let text = strip_source_map(&text);
        write_if_changed(&out_dir.join(dst), text.as_bytes());
    }
}

/// Installs the page's packages exactly as `package-lock.json` pins them.
fn npm_ci(web: &Path) {
    let npm = env::var("AETHER_NPM").unwrap_or_else(|_| "npm".to_owned());
    let status = Command::new(&npm)
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(web)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!(
            "`{npm} ci` in {} failed ({s}); the gateway embeds xterm.js from npm, so the build \
             needs the npm registry (or a populated gateway/web/node_modules)",
            web.display()
        ),
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "npm not found: building the gateway needs Node.js and npm to fetch the web page's \
             xterm.js (e.g. `apt-get install nodejs npm`), or set AETHER_NPM to the npm binary"
        ),
        Err(e) => panic!("could not run `{npm} ci` in {}: {e}", web.display()),
    }
}

/// Removes a trailing `//# sourceMappingURL=…` line (and `/*# … */` for CSS).
fn strip_source_map(text: &str) -> String {
    text.lines()
        .filter(|l| {
            let l = l.trim_start();
            !(l.starts_with("//# sourceMappingURL=") || l.starts_with("/*# sourceMappingURL="))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Writes only when the bytes differ, so an unchanged file keeps its mtime and does not make
/// cargo recompile the crate.
fn write_if_changed(path: &Path, bytes: &[u8]) {
    if fs::read(path).is_ok_and(|old| old == bytes) {
        return;
    }
    fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

//! `aether-load`: see the library's documentation for the scenarios and the layout.

use std::process::ExitCode;

use clap::Parser;
use loadtests::cli::{Cli, Cmd};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("aether-load: runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.cmd {
        Cmd::Worker => {
            let r = rt.block_on(loadtests::worker::main());
            if let Err(e) = &r {
                eprintln!("aether-load worker: {e:#}");
            }
            // The worker's stdin reader sits in a blocking thread that a runtime shutdown would
            // wait for; the outcome is written, so leave at once.
            std::process::exit(if r.is_ok() { 0 } else { 2 });
        }
        cmd => rt.block_on(loadtests::run::run(cmd)),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("aether-load: {e:#}");
            ExitCode::from(2)
        }
    }
}

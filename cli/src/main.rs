//! The `aether` binary: everything is in the library, see [`cli`].

fn main() -> std::process::ExitCode {
    cli::main()
}

//! The `ringway` binary; everything lives in the library's `cli` module.

fn main() -> std::process::ExitCode {
    ringway::cli::main()
}

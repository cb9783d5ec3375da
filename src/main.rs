//! The `callwarden` binary: parses the command line and hands over to [`callwarden::cli`].

fn main() -> std::process::ExitCode {
    callwarden::cli::main()
}

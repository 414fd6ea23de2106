//! The `wasm-host` command: everything lives in the library.
fn main() -> std::process::ExitCode {
    wasm_host::cli::main()
}

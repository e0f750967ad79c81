fn main() -> std::process::ExitCode {
    scribefs::cli::main()
}

fn main() -> std::process::ExitCode {
    evhost::cli::main()
}

fn main() -> std::process::ExitCode {
    ffrtmp::cli::main()
}

fn main() -> std::process::ExitCode {
    ccci::main()
}

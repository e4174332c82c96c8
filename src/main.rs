//! The `herold` binary: everything happens in [`herold::cli`].

fn main() -> std::process::ExitCode {
    herold::cli::main()
}

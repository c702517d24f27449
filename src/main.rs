fn main() {
    std::process::exit(keybridge::cli::main());
}

// Bus workers free on one thread what ingest allocated on another; mimalloc handles
// that without the arena-lock contention glibc's allocator showed under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    evhost::cli::main()
}

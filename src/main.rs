//! `widget-auth`: see `cli/` for the commands and `app.rs` for the server.

/// The hot path allocates small, short-lived buffers for every request (headers, bodies,
/// tokens); mimalloc serves those markedly faster than glibc's allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    widget_auth::cli::run().await
}

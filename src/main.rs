//! `widget-auth`: see `cli.rs` for the commands and `lib.rs` for the server.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    widget_auth::cli::run().await
}

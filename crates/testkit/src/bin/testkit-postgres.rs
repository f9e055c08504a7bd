//! A private PostgreSQL for tests written in other languages (the TypeScript client's): starts
//! one as [`switchboard_testkit::Postgres`] does (`initdb` into a temp dir, a free port on
//! 127.0.0.1, as `nobody` when run as root), prints its URL as one line on stdout, and stops it
//! and removes its files when stdin closes (the test ended or died) or on SIGTERM.

use std::io::Write as _;

use tokio::io::AsyncReadExt as _;
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let postgres = switchboard_testkit::Postgres::start().await?;
    // The one line the caller reads.
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{}", postgres.url())?;
    stdout.flush()?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut stdin = tokio::io::stdin();
    let mut sink = [0_u8; 64];
    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            read = stdin.read(&mut sink) => match read {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            },
        }
    }
    drop(postgres);
    Ok(())
}

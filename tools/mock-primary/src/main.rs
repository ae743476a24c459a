//! The `backstop-mock-primary` binary: the mock OpenID provider on its own, for manual runs
//! and for tests that want a separate process. All logic is in the library.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use backstop_mock_primary::{IssuerSource, KeySource, MockOptions, MockPrimary};
use clap::Parser;

/// A small in-memory OpenID provider with fault injection (the primary for backstop's tests
/// and demo). Admin API under /mock/* on both listeners (the admin one survives `down`).
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Main listener: discovery, JWKS, token endpoint.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Admin listener (/mock/* only), reachable while the main one is down.
    #[arg(long, default_value = "127.0.0.1:0")]
    admin_listen: SocketAddr,
    /// Issuer URL; default http://{listen address}.
    #[arg(long)]
    issuer: Option<String>,
    /// Always use the configured issuer instead of deriving it from Host / X-Forwarded-*.
    #[arg(long)]
    fixed_issuer: bool,
    /// RSA private key (PEM, PKCS#8 or PKCS#1); generated at start when absent.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Access-token lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    access_token_ttl_secs: u64,
}

#[allow(clippy::print_stdout)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    let handle = MockPrimary::start(MockOptions {
        listen: cli.listen,
        admin_listen: cli.admin_listen,
        issuer: cli.issuer,
        issuer_source: if cli.fixed_issuer {
            IssuerSource::Configured
        } else {
            IssuerSource::Request
        },
        key: cli.key.map_or(KeySource::Generate, KeySource::PemFile),
        access_token_ttl_secs: cli.access_token_ttl_secs,
        ..MockOptions::default()
    })?;
    // A reader that takes only the first line and closes the pipe (a test, `| head -1`) must
    // not bring the provider down: write errors on stdout are ignored, unlike `println!`'s panic.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "mock-primary: listening on http://{}", handle.addr());
    let _ = writeln!(out, "mock-primary: admin on http://{}", handle.admin_addr());
    let _ = writeln!(out, "mock-primary: issuer {}", handle.issuer());
    drop(out);
    // Serve until killed; the handle owns the server thread.
    loop {
        std::thread::park();
    }
}

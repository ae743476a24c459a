//! `backstop-loadgen`: the load generator of issue 7. Drives a token endpoint (backstop, or the
//! floor server for the baseline) over HTTP/1.1 keep-alive connections, open loop at a fixed
//! rate (latency from each request's due time, so a slow server cannot hide behind a slowed
//! client) or closed loop at the maximum, with refresh grants drawn from a recorded population
//! of sessions. Reports server CPU per 1 000 requests (from `/proc/PID/stat` before and after)
//! as the headline, then throughput, latency percentiles with the setup that produced them, and
//! outcomes by HTTP status and RFC 6749 `error` code.
//!
//! ```text
//! backstop-loadgen --url http://127.0.0.1:8080/token --population tokens.txt \
//!     --rate 10000 --seconds 30 --connections 32 --server-pid $PID --json result.json
//! ```

// A load generator reads the clock by nature: every figure it reports is a time.
#![allow(clippy::disallowed_methods)]

mod cpu;
mod dpop;
mod population;
mod report;
mod run;
mod schedule;

use std::net::ToSocketAddrs as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "backstop-loadgen",
    version,
    about = "Load generator for backstop's token endpoint (issue 7)"
)]
struct Cli {
    /// Target URL (`http://HOST:PORT/PATH`).
    #[arg(long)]
    url: String,
    /// Population file: `client_id refresh_token resource [dpop:KEY] [class:NAME]` per line (as
    /// `backstop seed --tokens-out` writes it). Requests are POSTed refresh grants, round robin
    /// over the sessions. Without it: bodiless `--method` requests (for a bare server).
    #[arg(long, value_name = "FILE")]
    population: Option<PathBuf>,
    /// Method of the generic requests sent without a population.
    #[arg(long, default_value = "GET")]
    method: String,
    /// Open loop at this many requests per second (latency from each request's due time).
    /// Without it: closed loop, every connection back to back.
    #[arg(long)]
    rate: Option<u64>,
    /// How long to send for, seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Keep-alive connections.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Client threads (one current-thread runtime each).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Pin client threads to these CPUs (comma-separated; thread t on the (t mod n)-th).
    #[arg(long, value_name = "CPU[,CPU..]", value_delimiter = ',')]
    pin: Vec<usize>,
    /// The server process whose CPU time is measured (`/proc/PID/stat`).
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
    /// `htu` of DPoP proofs (default: the target URL).
    #[arg(long)]
    htu: Option<String>,
    /// Give up on one request after this many seconds.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Also write the JSON report to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// What to print on stdout.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Table,
    Json,
}

fn main() -> std::process::ExitCode {
    match run_cli(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("backstop-loadgen: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The target of `--url`: where to connect, the `Host` header and the request path.
#[derive(Debug)]
struct Target {
    addr: std::net::SocketAddr,
    host: String,
    path: String,
}

fn parse_url(url: &str) -> anyhow::Result<Target> {
    let uri: hyper::Uri = url.parse().with_context(|| format!("--url {url:?}"))?;
    if uri.scheme_str() != Some("http") {
        bail!("--url {url:?}: only http:// is supported");
    }
    let authority = uri
        .authority()
        .with_context(|| format!("--url {url:?}: no host"))?;
    let port = authority.port_u16().unwrap_or(80);
    let addr = (authority.host(), port)
        .to_socket_addrs()
        .with_context(|| format!("--url {url:?}: resolving {}", authority.host()))?
        .next()
        .with_context(|| format!("--url {url:?}: {} has no address", authority.host()))?;
    let path = uri
        .path_and_query()
        .map_or("/".to_string(), |p| p.as_str().to_string());
    Ok(Target {
        addr,
        host: authority.as_str().to_string(),
        path,
    })
}

fn run_cli(cli: Cli) -> anyhow::Result<()> {
    let target = parse_url(&cli.url)?;
    if !(cli.seconds > 0.0 && cli.seconds.is_finite()) {
        bail!("--seconds must be a positive number");
    }
    if !(cli.timeout > 0.0 && cli.timeout.is_finite()) {
        bail!("--timeout must be a positive number");
    }
    if cli.rate == Some(0) {
        bail!("--rate must be at least 1 (omit it for a closed loop)");
    }
    if cli.connections == 0 || cli.threads == 0 {
        bail!("--connections and --threads must be at least 1");
    }
    let population = match &cli.population {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading --population {}", path.display()))?;
            let p = population::parse(&text)
                .with_context(|| format!("--population {}", path.display()))?;
            Some(Arc::new(p))
        }
        None => None,
    };
    let method = match population {
        Some(_) => hyper::Method::POST,
        None => cli
            .method
            .parse()
            .with_context(|| format!("--method {:?}", cli.method))?,
    };
    let setup = report::Setup {
        url: cli.url.clone(),
        mode: if cli.rate.is_some() { "open" } else { "closed" },
        rate_per_sec: cli.rate,
        seconds: cli.seconds,
        connections: cli.connections,
        threads: cli.threads,
        pinned_cpus: (!cli.pin.is_empty()).then(|| cli.pin.clone()),
        population_sessions: population.as_ref().map_or(0, |p| p.sessions.len()),
        dpop_sessions: population.as_ref().map_or(0, |p| p.dpop_count()),
        server_pid: cli.server_pid,
    };
    let classes = population
        .as_ref()
        .map(|p| p.classes.clone())
        .unwrap_or_default();
    let plan = run::Plan {
        addr: target.addr,
        host: hyper::header::HeaderValue::from_str(&target.host)
            .with_context(|| format!("--url {:?}: host {:?}", cli.url, target.host))?,
        path: target
            .path
            .parse()
            .with_context(|| format!("--url {:?}: path {:?}", cli.url, target.path))?,
        htu: cli.htu.clone().unwrap_or_else(|| cli.url.clone()),
        method,
        population,
        rate_per_sec: cli.rate,
        duration: Duration::from_secs_f64(cli.seconds),
        connections: cli.connections,
        threads: cli.threads,
        pin: cli.pin.clone(),
        request_timeout: Duration::from_secs_f64(cli.timeout),
    };

    let server_before = cli
        .server_pid
        .map(|pid| cpu::cpu_time(Some(pid)))
        .transpose()?;
    let client_before = cpu::cpu_time(None)?;
    let (stats, scheduled, elapsed) = run::run(plan)?;
    let client_after = cpu::cpu_time(None)?;
    let server_after = cli
        .server_pid
        .map(|pid| cpu::cpu_time(Some(pid)))
        .transpose()?;

    let measured = report::Measured {
        scheduled,
        elapsed_secs: elapsed.as_secs_f64(),
        server_cpu: server_before.zip(server_after).map(|(b, a)| a.since(&b)),
        client_cpu: client_after.since(&client_before),
    };
    let report = report::Report::new(setup, &classes, &stats, &measured);
    let json = serde_json::to_string_pretty(&report).context("serializing the report")?;
    if let Some(path) = &cli.json {
        std::fs::write(path, format!("{json}\n"))
            .with_context(|| format!("writing --json {}", path.display()))?;
    }
    match cli.format {
        Format::Table => print_out(&report.table()),
        Format::Json => print_out(&format!("{json}\n")),
    }
    Ok(())
}

/// The report is the tool's output.
#[allow(clippy::print_stdout)]
fn print_out(text: &str) {
    print!("{text}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_address_host_header_and_path() {
        let t = parse_url("http://127.0.0.1:8080/token?x=1").unwrap();
        assert_eq!(t.addr.to_string(), "127.0.0.1:8080");
        assert_eq!(t.host, "127.0.0.1:8080");
        assert_eq!(t.path, "/token?x=1");
        assert_eq!(parse_url("http://127.0.0.1:9").unwrap().path, "/");
        assert!(
            parse_url("https://127.0.0.1/")
                .unwrap_err()
                .to_string()
                .contains("only http://")
        );
        assert!(parse_url("not a url").is_err());
    }
}

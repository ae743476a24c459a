//! The HTTP floor: the least a token endpoint on this stack can cost per request.
//!
//! A bare hyper HTTP/1.1 server with the same thread-per-core shape as backstop (one
//! current-thread runtime and one `SO_REUSEPORT` listener per worker) that answers every
//! request with a fixed body: no routing, no limits, no metrics. Benchmarks report backstop's
//! CPU per request as a ratio to this server's, measured in the same run.
//!
//! Usage: `backstop-floor [ADDR] [WORKERS]` (defaults `127.0.0.1:0` and one per core). Prints
//! `listening on http://ADDR` on stdout, then serves until killed.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use socket2::{Domain, Socket, Type};

const BODY: &[u8] = b"ok\n";

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:0".to_string())
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("ADDR: {e}")))?;
    let workers = match args.next() {
        Some(n) => n.parse().map_err(|e| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("WORKERS: {e}"))
        })?,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };

    let first = listener(addr)?;
    let bound = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..workers {
        listeners.push(listener(bound)?);
    }
    print_listening(bound);

    let threads: Vec<_> = listeners
        .into_iter()
        .map(|l| std::thread::spawn(move || worker(l)))
        .collect();
    for t in threads {
        match t.join() {
            Ok(result) => result?,
            Err(_) => return Err(std::io::Error::other("worker panicked")),
        }
    }
    Ok(())
}

#[allow(clippy::print_stdout)]
fn print_listening(addr: SocketAddr) {
    println!("listening on http://{addr}");
}

fn listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

fn worker(listener: std::net::TcpListener) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::task::spawn_local(async move {
                let service =
                    hyper::service::service_fn(|_req: Request<hyper::body::Incoming>| async {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(BODY))))
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

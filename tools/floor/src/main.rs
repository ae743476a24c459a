//! The HTTP floor: the least a token endpoint on this stack can cost per request.
//!
//! A bare hyper HTTP/1.1 server with the same thread-per-core shape as backstop (one
//! current-thread runtime and one `SO_REUSEPORT` listener per worker) that answers every
//! request with a fixed body: no routing, no limits, no metrics. Benchmarks report backstop's
//! CPU per request as a ratio to this server's, measured in the same run.
//!
//! With a third argument `UPSTREAM` (`http://host:port`) it is instead the plain-proxy floor:
//! every request is forwarded to the upstream through a pooled hyper client and the answer
//! streamed back, with no limits, metrics, header rewriting or breaker. Normal-mode overhead
//! is reported against it.
//!
//! Usage: `backstop-floor [ADDR] [WORKERS] [UPSTREAM]` (defaults `127.0.0.1:0`, one worker per
//! core, fixed body). Prints `listening on http://ADDR` on stdout, then serves until killed.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full};
use hyper::{Request, Response, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use socket2::{Domain, Socket, Type};

/// The same allocator as `backstop`, so ratios compare our code, not two allocators.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BODY: &[u8] = b"ok\n";

/// The fixed body: `ok\n`, or `BACKSTOP_FLOOR_BODY_BYTES` bytes (so a floor for a token
/// endpoint sends as much as a token response does: on loopback, the kernel's cost of a
/// response grows with its size, in the sender's CPU time).
fn body() -> Bytes {
    match std::env::var("BACKSTOP_FLOOR_BODY_BYTES")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        Some(n) => Bytes::from(vec![b'a'; n]),
        None => Bytes::from_static(BODY),
    }
}

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
    let upstream: Option<Uri> = match args.next() {
        Some(u) => Some(u.parse().map_err(|e| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("UPSTREAM: {e}"))
        })?),
        None => None,
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
        .map(|l| {
            let upstream = upstream.clone();
            std::thread::spawn(move || worker(l, upstream))
        })
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

fn worker(listener: std::net::TcpListener, upstream: Option<Uri>) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let upstream = std::rc::Rc::new(upstream);
        let fixed = body();
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let client = client.clone();
            let upstream = upstream.clone();
            let fixed = fixed.clone();
            tokio::task::spawn_local(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let client = client.clone();
                        let upstream = upstream.clone();
                        let fixed = fixed.clone();
                        async move {
                            let Some(base) = upstream.as_ref() else {
                                // Read the request body, as any endpoint taking a form must.
                                let _ = req.into_body().collect().await;
                                return Ok::<_, Infallible>(Response::new(Either::Left(
                                    Full::new(fixed),
                                )));
                            };
                            Ok(forward(&client, base, req).await)
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

type ProxyBody = Either<Full<Bytes>, hyper::body::Incoming>;

/// The plain proxy: same method, path, headers and (buffered) body; the answer streamed back.
async fn forward(
    client: &Client<HttpConnector, Full<Bytes>>,
    base: &Uri,
    req: Request<hyper::body::Incoming>,
) -> Response<ProxyBody> {
    let (mut parts, body) = req.into_parts();
    let bad_gateway = || {
        let mut r = Response::new(Either::Left(Full::new(Bytes::from_static(
            b"bad gateway\n",
        ))));
        *r.status_mut() = hyper::StatusCode::BAD_GATEWAY;
        r
    };
    let Ok(body) = body.collect().await.map(|c| c.to_bytes()) else {
        return bad_gateway();
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let Ok(uri) = format!("{base}{}", path.trim_start_matches('/')).parse::<Uri>() else {
        return bad_gateway();
    };
    parts.uri = uri;
    match client
        .request(Request::from_parts(parts, Full::new(body)))
        .await
    {
        Ok(response) => response.map(Either::Right),
        Err(_) => bad_gateway(),
    }
}

//! The upstream client: pooled HTTP/1.1 connections from one worker to the primary (plain or
//! TLS through rustls), connect and request timeouts, request forwarding that keeps what a
//! provider needs (the client's `Host`, `X-Forwarded-*`), and the classification of every
//! unexpected failure for the breaker.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Request, Response, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::config::PrimaryConfig;
use crate::failover::UpstreamFailure;
use crate::limits;

/// Why the upstream client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The CA file could not be read or parsed.
    #[error("cannot load CA certificates from {path} (config field `primary.ca_file`): {reason}")]
    CaFile {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("cannot configure TLS to the primary: {0}")]
    Tls(String),
    /// The origin URL could not be split into scheme and authority.
    #[error("config field `primary.origin`: {0}")]
    Origin(String),
}

/// The TLS settings for the primary, built once at start and shared by every worker's client.
pub(crate) fn tls_config(
    primary: &PrimaryConfig,
) -> Result<Arc<rustls::ClientConfig>, UpstreamError> {
    let mut roots = rustls::RootCertStore::empty();
    // System roots: missing or partly unreadable system stores are not fatal when the
    // operator names a CA file, and a plain-http origin needs none at all.
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = &primary.ca_file {
        use rustls_pki_types::pem::PemObject;
        let ca_err = |reason: String| UpstreamError::CaFile {
            path: path.clone(),
            reason,
        };
        let mut added = 0;
        for cert in rustls_pki_types::CertificateDer::pem_file_iter(path)
            .map_err(|e| ca_err(e.to_string()))?
        {
            let cert = cert.map_err(|e| ca_err(e.to_string()))?;
            roots.add(cert).map_err(|e| ca_err(e.to_string()))?;
            added += 1;
        }
        if added == 0 {
            return Err(ca_err("no certificates found".into()));
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| UpstreamError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// One worker's client to the primary.
pub(crate) struct Upstream {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    scheme: hyper::http::uri::Scheme,
    authority: hyper::http::uri::Authority,
    request_timeout: Duration,
    /// `X-Forwarded-Proto`: the scheme clients used, from the configured issuer.
    forwarded_proto: HeaderValue,
    probe_path: hyper::http::uri::PathAndQuery,
}

/// A pooled HTTP/1.1 client over rustls (or plain http for `http:` URLs) with `tls` and a
/// connect timeout: the primary's client, and the Shared Signals transmitter's JWKS fetcher.
pub(crate) fn https_client(
    tls: &rustls::ClientConfig,
    connect_timeout: Duration,
) -> Client<HttpsConnector<HttpConnector>, Full<Bytes>> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls.clone())
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(limits::UPSTREAM_POOL_IDLE_PER_WORKER)
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector)
}

impl Upstream {
    /// A client for `primary`, forwarding as the public `issuer` URL.
    pub(crate) fn new(
        primary: &PrimaryConfig,
        issuer: &str,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<Self, UpstreamError> {
        let origin: Uri = primary
            .origin
            .parse()
            .map_err(|e| UpstreamError::Origin(format!("{e}")))?;
        let scheme = origin
            .scheme()
            .cloned()
            .ok_or_else(|| UpstreamError::Origin("no scheme".into()))?;
        let authority = origin
            .authority()
            .cloned()
            .ok_or_else(|| UpstreamError::Origin("no host".into()))?;
        let client = https_client(&tls, primary.connect_timeout);
        let forwarded_proto = HeaderValue::from_static(if issuer.starts_with("https:") {
            "https"
        } else {
            "http"
        });
        let probe_path = primary
            .probe_path
            .parse()
            .map_err(|e| UpstreamError::Origin(format!("probe_path: {e}")))?;
        Ok(Self {
            client,
            scheme,
            authority,
            request_timeout: primary.request_timeout,
            forwarded_proto,
            probe_path,
        })
    }

    fn uri(&self, path_and_query: hyper::http::uri::PathAndQuery) -> Result<Uri, UpstreamFailure> {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|_| UpstreamFailure::Garbage)
    }

    /// Forwards a client request (head and already-read body) to the primary and returns its
    /// answer, or why there is none. A 500/502/503/504 answer is a failure, not an answer.
    /// The head is taken by value and edited in place: forwarding copies no header.
    /// `peer_ip` is the client's address as a header value, computed once per connection.
    pub(crate) async fn forward(
        &self,
        mut parts: Parts,
        body: Bytes,
        peer_ip: &HeaderValue,
    ) -> Result<Response<Incoming>, UpstreamFailure> {
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| hyper::http::uri::PathAndQuery::from_static("/"));
        parts.uri = self.uri(path)?;
        strip_hop_by_hop(&mut parts.headers);
        self.set_forwarded(&mut parts.headers, peer_ip);
        self.send(Request::from_parts(parts, Full::new(body))).await
    }

    /// [`Upstream::forward`] for a head the caller keeps (the token endpoint answers from the
    /// backup with it when forwarding fails): copies only the method, version and headers
    /// the request needs, not the whole head with its URI and extensions.
    pub(crate) async fn forward_borrowed(
        &self,
        head: &Parts,
        body: Bytes,
        peer_ip: &HeaderValue,
    ) -> Result<Response<Incoming>, UpstreamFailure> {
        let path = head
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| hyper::http::uri::PathAndQuery::from_static("/"));
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = head.method.clone();
        *req.version_mut() = head.version;
        *req.uri_mut() = self.uri(path)?;
        *req.headers_mut() = head.headers.clone();
        strip_hop_by_hop(req.headers_mut());
        self.set_forwarded(req.headers_mut(), peer_ip);
        self.send(req).await
    }

    /// Fetches a document (discovery, JWKS) from the primary as a client of the public issuer
    /// would: `Host` and `X-Forwarded-Host`/`-Proto` name the issuer, so the provider builds
    /// its URLs for the public name (FIELD-NOTES). The body is read whole, bounded in size and
    /// by the request timeout; anything but a 200 is a failure.
    pub(crate) async fn fetch_as_issuer(
        &self,
        path: &str,
        issuer: &Uri,
    ) -> Result<Bytes, UpstreamFailure> {
        let path: hyper::http::uri::PathAndQuery =
            path.parse().map_err(|_| UpstreamFailure::Garbage)?;
        let mut req = Request::new(Full::new(Bytes::new()));
        *req.uri_mut() = self.uri(path)?;
        if let Some(authority) = issuer.authority()
            && let Ok(host) = HeaderValue::from_str(authority.as_str())
        {
            req.headers_mut().insert(header::HOST, host.clone());
            req.headers_mut()
                .insert(HeaderName::from_static("x-forwarded-host"), host);
        }
        req.headers_mut().insert(
            HeaderName::from_static("x-forwarded-proto"),
            self.forwarded_proto.clone(),
        );
        req.headers_mut()
            .insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let response = self.send(req).await?;
        if response.status() != hyper::StatusCode::OK {
            return Err(UpstreamFailure::Garbage);
        }
        let limited = http_body_util::Limited::new(
            response.into_body(),
            limits::UPSTREAM_BUFFERED_BODY_BYTES_MAX,
        );
        match tokio::time::timeout(
            self.request_timeout,
            http_body_util::BodyExt::collect(limited),
        )
        .await
        {
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(_)) => Err(UpstreamFailure::Garbage),
            Err(_) => Err(UpstreamFailure::Timeout),
        }
    }

    /// The half-open probe: a GET of the probe path; any 2xx is a healthy primary.
    pub(crate) async fn probe(&self) -> Result<(), UpstreamFailure> {
        let mut req = Request::new(Full::new(Bytes::new()));
        *req.uri_mut() = self.uri(self.probe_path.clone())?;
        let response = self.send(req).await?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(UpstreamFailure::Garbage)
        }
    }

    async fn send(&self, req: Request<Full<Bytes>>) -> Result<Response<Incoming>, UpstreamFailure> {
        let response =
            match tokio::time::timeout(self.request_timeout, self.client.request(req)).await {
                Err(_elapsed) => return Err(UpstreamFailure::Timeout),
                Ok(Err(e)) if e.is_connect() => return Err(UpstreamFailure::Connect),
                Ok(Err(_)) => return Err(UpstreamFailure::Reset),
                Ok(Ok(response)) => response,
            };
        match UpstreamFailure::from_status(response.status().as_u16()) {
            Some(failure) => Err(failure),
            None => Ok(response),
        }
    }

    fn set_forwarded(&self, headers: &mut HeaderMap, peer_ip: &HeaderValue) {
        // X-Forwarded-For: append the peer to any chain a trusted proxy in front of us built.
        let chain = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(existing) => {
                HeaderValue::from_str(&format!("{existing}, {}", peer_ip.to_str().unwrap_or("")))
                    .unwrap_or_else(|_| peer_ip.clone())
            }
            None => peer_ip.clone(),
        };
        headers.insert(HeaderName::from_static("x-forwarded-for"), chain);
        // X-Forwarded-Host and -Proto describe the request as the client made it, so the
        // provider builds its URLs (discovery, DPoP `htu`) for the public name. We overwrite
        // what the client sent: a client must not choose the URLs the provider issues.
        match headers.get(header::HOST).cloned() {
            Some(host) => {
                headers.insert(HeaderName::from_static("x-forwarded-host"), host);
            }
            None => {
                headers.remove("x-forwarded-host");
            }
        }
        headers.insert(
            HeaderName::from_static("x-forwarded-proto"),
            self.forwarded_proto.clone(),
        );
    }
}

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Removes, in place, every hop-by-hop header and any header the `Connection` header names.
/// `Host` stays as the client sent it.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        // Rare enough (HTTP/1.1 clients mostly send `keep-alive` or nothing) to allocate for.
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_dropped() {
        let mut from = HeaderMap::new();
        from.insert(header::HOST, HeaderValue::from_static("login.example.com"));
        from.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret-Hop"),
        );
        from.insert("x-secret-hop", HeaderValue::from_static("1"));
        from.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        from.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        from.append("dpop", HeaderValue::from_static("eyJ..."));
        from.append(header::COOKIE, HeaderValue::from_static("a=1"));
        from.append(header::COOKIE, HeaderValue::from_static("b=2"));
        let mut to = from;
        strip_hop_by_hop(&mut to);
        assert_eq!(to.get(header::HOST).unwrap(), "login.example.com");
        assert_eq!(to.get("dpop").unwrap(), "eyJ...");
        assert_eq!(to.get_all(header::COOKIE).iter().count(), 2);
        for gone in [
            "connection",
            "keep-alive",
            "transfer-encoding",
            "x-secret-hop",
        ] {
            assert!(to.get(gone).is_none(), "{gone} was forwarded");
        }
    }
}

//! The simulated clients' side of the wire: one pooled HTTP/1.1 keep-alive client to backstop,
//! token requests, and telling who signed a token (the primary's `kid` or one of backstop's).

use std::collections::BTreeSet;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{Method, Request, StatusCode, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::stats::Outcome;

/// Bytes of a response body the demo reads (token responses are a few KiB).
const RESPONSE_BODY_BYTES_MAX: usize = 256 * 1024;

/// A client gives up on a request after this long (backstop answers long before: its own
/// upstream timeout is far shorter).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP answer, read whole.
#[derive(Debug)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Body.
    pub body: Bytes,
    /// `Retry-After` in seconds, when the answer had one in that form.
    pub retry_after_secs: Option<u64>,
}

/// Why a request got no HTTP answer; the names appear in the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoReply {
    /// The client's own deadline passed.
    Timeout,
    /// The connection could not be made.
    Connect,
    /// The connection broke, or the answer was not HTTP.
    Transport,
    /// The body was too large or broke off.
    Body,
}

impl NoReply {
    /// The name in refusal tables.
    pub fn name(self) -> &'static str {
        match self {
            Self::Timeout => "client timeout",
            Self::Connect => "connect error",
            Self::Transport => "transport error",
            Self::Body => "body error",
        }
    }
}

/// One pooled keep-alive client to one base URL (`http://host:port`).
#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
}

impl Http {
    /// A client keeping up to `idle_max` connections open.
    pub fn new(base: &str, idle_max: usize) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(idle_max)
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self {
            client,
            base: base.trim_end_matches('/').to_string(),
        }
    }

    /// `POST {base}{path}` with a form body.
    pub async fn post_form(&self, path: &str, form: String) -> Result<Reply, NoReply> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("{}{path}", self.base))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(form)))
            .map_err(|_| NoReply::Transport)?;
        self.send(request).await
    }

    /// `GET {base}{path}`, with a bearer token when given.
    pub async fn get(&self, path: &str, bearer: Option<&str>) -> Result<Reply, NoReply> {
        let mut builder = Request::builder()
            .method(Method::GET)
            .uri(format!("{}{path}", self.base));
        if let Some(token) = bearer {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = builder
            .body(Full::new(Bytes::new()))
            .map_err(|_| NoReply::Transport)?;
        self.send(request).await
    }

    async fn send(&self, request: Request<Full<Bytes>>) -> Result<Reply, NoReply> {
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| {
                if e.is_connect() {
                    NoReply::Connect
                } else {
                    NoReply::Transport
                }
            })?;
            let status = response.status();
            let retry_after_secs = response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok());
            let body = Limited::new(response.into_body(), RESPONSE_BODY_BYTES_MAX)
                .collect()
                .await
                .map_err(|_| NoReply::Body)?
                .to_bytes();
            Ok(Reply {
                status,
                body,
                retry_after_secs,
            })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .unwrap_or(Err(NoReply::Timeout))
    }
}

/// Who may have signed a token: the primary's key id and backstop's own.
#[derive(Debug, Clone)]
pub struct Signers {
    /// The primary's `kid`.
    pub primary: String,
    /// backstop's `kid`s (every algorithm's published keys).
    pub backstop: BTreeSet<String>,
}

/// A token response, as far as the demo cares.
#[derive(Debug)]
pub struct Granted {
    /// Who answered, by the access token's signer.
    pub outcome: Outcome,
    /// The refresh token to use next, when the response carried one.
    pub refresh_token: Option<String>,
}

impl Signers {
    /// Classifies a token-endpoint answer: a 200 by its access token's `kid`, anything else
    /// as a refusal by status and `error`.
    pub fn classify(&self, reply: &Reply) -> Granted {
        if reply.status != StatusCode::OK {
            return Granted {
                outcome: Outcome::refused(reply.status.as_u16(), &reply.body),
                refresh_token: None,
            };
        }
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(&reply.body) else {
            return Granted {
                outcome: Outcome::UnknownSigner,
                refresh_token: None,
            };
        };
        let kid = json
            .get("access_token")
            .and_then(|t| t.as_str())
            .and_then(jws_kid);
        let outcome = match kid {
            Some(kid) if kid == self.primary => Outcome::Primary,
            Some(kid) if self.backstop.contains(&kid) => Outcome::Backup,
            _ => Outcome::UnknownSigner,
        };
        let refresh_token = json
            .get("refresh_token")
            .and_then(|t| t.as_str())
            .map(str::to_string);
        Granted {
            outcome,
            refresh_token,
        }
    }
}

/// The `kid` of a compact JWS's protected header, without verifying anything: the demo only
/// tells signers apart, the tests of backstop verify signatures.
pub fn jws_kid(token: &str) -> Option<String> {
    let header = token.split('.').next()?;
    let raw = URL_SAFE_NO_PAD.decode(header).ok()?;
    let json: serde_json::Value = serde_json::from_slice(&raw).ok()?;
    json.get("kid")?.as_str().map(str::to_string)
}

/// The `kid`s of a JWKS document.
pub fn jwks_kids(jwks: &[u8]) -> Option<BTreeSet<String>> {
    let json: serde_json::Value = serde_json::from_slice(jwks).ok()?;
    let keys = json.get("keys")?.as_array()?;
    Some(
        keys.iter()
            .filter_map(|k| k.get("kid").and_then(|v| v.as_str()).map(str::to_string))
            .collect(),
    )
}

/// `application/x-www-form-urlencoded` encoding of one value (RFC 3986 unreserved kept).
pub fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signers() -> Signers {
        Signers {
            primary: "p-kid".into(),
            backstop: ["b-kid".to_string()].into_iter().collect(),
        }
    }

    fn token_with_kid(kid: &str) -> String {
        let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"RS256","kid":"{kid}"}}"#));
        format!("{header}.e30.c2ln")
    }

    fn ok(body: String) -> Reply {
        Reply {
            status: StatusCode::OK,
            body: Bytes::from(body),
            retry_after_secs: None,
        }
    }

    #[test]
    fn a_200_is_classified_by_the_access_tokens_kid() {
        for (kid, outcome) in [
            ("p-kid", Outcome::Primary),
            ("b-kid", Outcome::Backup),
            ("other", Outcome::UnknownSigner),
        ] {
            let body = format!(
                r#"{{"access_token":"{}","refresh_token":"rt-2"}}"#,
                token_with_kid(kid)
            );
            let granted = signers().classify(&ok(body));
            assert_eq!(granted.outcome, outcome, "{kid}");
            assert_eq!(granted.refresh_token.as_deref(), Some("rt-2"));
        }
    }

    #[test]
    fn a_refusal_keeps_no_refresh_token() {
        let reply = Reply {
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: Bytes::from_static(br#"{"error":"temporarily_unavailable"}"#),
            retry_after_secs: Some(1),
        };
        let granted = signers().classify(&reply);
        assert_eq!(
            granted.outcome,
            Outcome::Refused {
                status: 503,
                error: "temporarily_unavailable".into()
            }
        );
        assert!(granted.refresh_token.is_none());
    }

    #[test]
    fn garbage_tokens_have_no_kid() {
        assert_eq!(jws_kid("not a jws"), None);
        assert_eq!(jws_kid(""), None);
        assert_eq!(
            signers().classify(&ok("{".into())).outcome,
            Outcome::UnknownSigner
        );
    }

    #[test]
    fn jwks_kids_are_listed() {
        let kids = jwks_kids(br#"{"keys":[{"kid":"a"},{"kty":"OKP"},{"kid":"b"}]}"#).unwrap();
        assert_eq!(kids.into_iter().collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn form_values_are_percent_encoded() {
        assert_eq!(form_encode("a b+c/d~_-."), "a%20b%2Bc%2Fd~_-.");
    }
}

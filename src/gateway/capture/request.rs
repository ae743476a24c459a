//! The request half of a capture, taken from the parsed token request before it is forwarded:
//! the request borrows its body, which is gone by the time the primary answers, and the raw
//! credentials in it (refresh token, client secret) must become digests right away.

use bytes::Bytes;
use serde_json::Value;

use super::{CaptureJob, CapturedGrantType, GrantCapture, client_secret_digest};
use crate::limits;
use crate::protocol::{ClientAuth, TokenRequest};
use crate::store::{ArtifactDigest, ArtifactKind, ClientAuthMethod, Store};
use crate::token::{json, jws};

/// What capture needs to know about a token request, with every credential already digested.
#[derive(Debug, Clone)]
pub struct CaptureRequest {
    grant: CapturedGrantType,
    client_id: String,
    client_auth: ClientAuthMethod,
    client_secret_digest: Option<ArtifactDigest>,
    requested_resources: Vec<String>,
    requested_scope: Option<String>,
    presented_refresh: Option<ArtifactDigest>,
    dpop_proof: Option<Bytes>,
    device_header: Option<String>,
}

/// The store's method code for a parsed client authentication.
pub fn client_auth_method(auth: &ClientAuth<'_>) -> ClientAuthMethod {
    match auth {
        ClientAuth::None { .. } => ClientAuthMethod::None,
        ClientAuth::SecretBasic { .. } => ClientAuthMethod::SecretBasic,
        ClientAuth::SecretPost { .. } => ClientAuthMethod::SecretPost,
        ClientAuth::JwtAssertion { .. } => ClientAuthMethod::JwtAssertion,
    }
}

/// The client an assertion names (`sub`, RFC 7523 §3) when the request had no `client_id`
/// parameter. Read without verifying: this runs only for requests the primary then answered
/// with 200, that is, after the primary authenticated the assertion.
fn assertion_subject(assertion: &str) -> Option<String> {
    let jws = jws::parse_compact(assertion.as_bytes(), limits::JWS_COMPACT_BYTES_MAX).ok()?;
    let claims = json::parse_object(&jws.payload, "assertion", limits::JOSE_JSON_DEPTH_MAX).ok()?;
    match claims.get("sub") {
        Some(Value::String(s))
            if !s.is_empty() && s.len() <= limits::CAPTURE_CLAIM_VALUE_BYTES_MAX =>
        {
            Some(s.clone())
        }
        _ => None,
    }
}

impl CaptureRequest {
    /// The capture half of `req`, for the grants capture records (`authorization_code`,
    /// `refresh_token`); `None` for the others. `dpop_proof` is the request's `DPoP` header,
    /// `device_header` the value of the configured `capture.device_header`.
    pub fn from_token_request(
        store: &Store,
        req: &TokenRequest<'_>,
        dpop_proof: Option<Bytes>,
        device_header: Option<String>,
    ) -> Option<Self> {
        let (grant, client, presented, scope, resources) = match req {
            TokenRequest::AuthorizationCode {
                client, resources, ..
            } => (
                CapturedGrantType::AuthorizationCode,
                client,
                None,
                None,
                resources,
            ),
            TokenRequest::RefreshToken {
                client,
                refresh_token,
                scope,
                resources,
            } => (
                CapturedGrantType::RefreshToken,
                client,
                Some(store.artifact_digest(
                    ArtifactKind::RefreshToken,
                    refresh_token.expose().as_bytes(),
                )),
                *scope,
                resources,
            ),
            TokenRequest::ClientCredentials { .. } | TokenRequest::Other { .. } => return None,
        };
        let client_id = match client {
            ClientAuth::JwtAssertion {
                client_id: None,
                assertion,
            } => assertion_subject(assertion.expose())?,
            other => other.client_id()?.to_string(),
        };
        let client_secret_digest = match client {
            ClientAuth::SecretBasic { secret, .. } | ClientAuth::SecretPost { secret, .. } => Some(
                client_secret_digest(store, &client_id, secret.expose().as_bytes()),
            ),
            ClientAuth::None { .. } | ClientAuth::JwtAssertion { .. } => None,
        };
        Some(Self {
            grant,
            client_auth: client_auth_method(client),
            client_id,
            client_secret_digest,
            requested_resources: resources.iter().map(|r| r.to_string()).collect(),
            requested_scope: scope.map(str::to_string),
            presented_refresh: presented,
            dpop_proof,
            device_header,
        })
    }

    /// The job for a 200 answer with `response_body`, received at `received_at_secs`.
    pub fn granted(self, response_body: Bytes, received_at_secs: i64) -> CaptureJob {
        CaptureJob::Granted(Box::new(GrantCapture {
            grant: self.grant,
            client_id: self.client_id,
            client_auth: self.client_auth,
            client_secret_digest: self.client_secret_digest,
            requested_resources: self.requested_resources,
            requested_scope: self.requested_scope,
            presented_refresh: self.presented_refresh,
            dpop_proof: self.dpop_proof,
            device_header: self.device_header,
            response_body,
            received_at_secs,
        }))
    }

    /// The job for a 400 `invalid_grant` answer at `at_secs`: `Some` for a refresh grant only
    /// (a refused code revokes nothing the backup holds).
    pub fn refused(self, at_secs: i64) -> Option<CaptureJob> {
        Some(CaptureJob::Refused {
            presented: self.presented_refresh?,
            client_id: self.client_id,
            dpop_proof: self.dpop_proof,
            at_secs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::form::Form;
    use crate::store::StoreOpts;
    use crate::token::b64;

    fn parse<'a>(form: &'a Form<'a>, auth: Option<&'a [u8]>) -> TokenRequest<'a> {
        TokenRequest::parse(form, auth).unwrap()
    }

    #[test]
    fn refresh_request_becomes_digests_and_both_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOpts::manual()).unwrap();
        let body = b"grant_type=refresh_token&refresh_token=rt-1&client_id=app&client_secret=s3&scope=a+b&resource=https%3A%2F%2Fr.example";
        let form = Form::parse(body, crate::protocol::REPEATABLE).unwrap();
        let req = parse(&form, None);
        let c =
            CaptureRequest::from_token_request(&store, &req, None, Some("dev-1".into())).unwrap();
        assert_eq!(c.grant, CapturedGrantType::RefreshToken);
        assert_eq!(c.client_auth, ClientAuthMethod::SecretPost);
        assert_eq!(
            c.client_secret_digest,
            Some(client_secret_digest(&store, "app", b"s3"))
        );
        assert_eq!(
            c.presented_refresh,
            Some(store.artifact_digest(ArtifactKind::RefreshToken, b"rt-1"))
        );
        assert_eq!(c.requested_resources, ["https://r.example"]);
        assert_eq!(c.requested_scope.as_deref(), Some("a b"));
        // The raw secret and token are not in the value, not even in its Debug.
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("s3\"") && !dbg.contains("rt-1"), "{dbg}");
        let CaptureJob::Granted(g) = c.clone().granted(Bytes::from_static(b"{}"), 7) else {
            panic!("granted")
        };
        assert_eq!((g.client_id.as_str(), g.received_at_secs), ("app", 7));
        assert!(matches!(
            c.refused(8),
            Some(CaptureJob::Refused { at_secs: 8, .. })
        ));
    }

    #[test]
    fn code_request_has_no_presented_token_and_no_refusal_job() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOpts::manual()).unwrap();
        let form = Form::parse(b"grant_type=authorization_code&code=c&client_id=app", &[]).unwrap();
        let req = parse(&form, None);
        let c = CaptureRequest::from_token_request(&store, &req, None, None).unwrap();
        assert_eq!(c.grant, CapturedGrantType::AuthorizationCode);
        assert_eq!(c.client_auth, ClientAuthMethod::None);
        assert_eq!(c.presented_refresh, None);
        assert!(c.refused(1).is_none());

        let form = Form::parse(
            b"grant_type=client_credentials&client_id=app&client_secret=s",
            &[],
        )
        .unwrap();
        let req = parse(&form, None);
        assert!(CaptureRequest::from_token_request(&store, &req, None, None).is_none());
    }

    #[test]
    fn assertion_without_client_id_names_the_client_by_its_sub() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOpts::manual()).unwrap();
        let assertion = format!(
            "{}.{}.{}",
            b64::encode(br#"{"alg":"RS256"}"#),
            b64::encode(br#"{"iss":"svc","sub":"svc-app","aud":"x","exp":1}"#),
            b64::encode(b"sig")
        );
        let body = format!(
            "grant_type=authorization_code&code=c&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={assertion}"
        );
        let form = Form::parse(body.as_bytes(), &[]).unwrap();
        let req = parse(&form, None);
        let c = CaptureRequest::from_token_request(&store, &req, None, None).unwrap();
        assert_eq!(c.client_id, "svc-app");
        assert_eq!(c.client_auth, ClientAuthMethod::JwtAssertion);
        assert_eq!(c.client_secret_digest, None);
    }
}

//! The provider's memory and rules: clients, one-time codes, grants with strict refresh-token
//! rotation, DPoP binding and `jti` replay. Pure logic over `now` (no sockets, no clock, no
//! signing): the server calls it under a lock, then signs what it returns outside the lock.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde_json::{Map, Value, json};

use crate::jose::{VerifiedProof, random_b64url, sha256_b64url};
use crate::oauth::{ErrorCode, OAuthError};
use crate::{ClientConfig, GrantRequest, MockError};

/// Rotated-out refresh tokens remembered per grant: presenting one of these revokes the grant.
/// Older ones are forgotten and get a plain `invalid_grant` (nothing left to revoke them by).
pub(crate) const ROTATED_KEPT_PER_GRANT: usize = 64;

/// Lifetimes and capacities of the provider, from `MockOptions`.
#[derive(Debug, Clone)]
pub(crate) struct ProviderLimits {
    pub(crate) access_token_ttl_secs: u64,
    pub(crate) id_token_ttl_secs: u64,
    pub(crate) code_ttl_secs: u64,
    pub(crate) dpop_iat_window_secs: u64,
    pub(crate) grants_max: usize,
    pub(crate) codes_max: usize,
    pub(crate) dpop_jtis_max: usize,
}

/// Credentials a request presented: `Authorization: Basic` decoded, if any.
#[derive(Debug, Clone)]
pub(crate) struct BasicCredentials {
    pub(crate) client_id: String,
    pub(crate) secret: String,
}

/// One token request, parsed at the edge.
pub(crate) struct TokenInput<'a> {
    pub(crate) form: &'a BTreeMap<String, String>,
    pub(crate) basic: Option<BasicCredentials>,
    pub(crate) proof: Option<VerifiedProof>,
    pub(crate) issuer: &'a str,
    pub(crate) now: u64,
}

/// What to send back once signed: claims of the tokens and the response members.
#[derive(Debug)]
pub(crate) struct Issue {
    pub(crate) access_claims: Value,
    pub(crate) id_claims: Option<Value>,
    pub(crate) refresh_token: Option<String>,
    pub(crate) token_type: &'static str,
    pub(crate) expires_in: u64,
    pub(crate) scope: String,
}

#[derive(Debug)]
struct Client {
    /// SHA-256 of the secret (compared digest to digest, so timing says nothing); `None` for
    /// public clients.
    secret_digest: Option<String>,
    tenant: Option<String>,
    roles: Vec<String>,
    scope: Option<String>,
}

#[derive(Debug)]
struct PendingCode {
    grant: GrantRequest,
    auth_time: u64,
    expires_at: u64,
    /// Set once redeemed: the grant it created, revoked if the code is presented again.
    redeemed_as: Option<u64>,
}

#[derive(Debug)]
struct Grant {
    req: GrantRequest,
    auth_time: u64,
    jkt: Option<String>,
    generation: u64,
    /// Every refresh token of this grant still remembered, oldest first; the last is current.
    tokens: VecDeque<String>,
}

#[derive(Debug, Clone, Copy)]
struct TokenRef {
    grant: u64,
    generation: u64,
}

/// The provider state.
#[derive(Debug)]
pub(crate) struct Provider {
    limits: ProviderLimits,
    clients: HashMap<String, Client>,
    codes: HashMap<String, PendingCode>,
    grants: HashMap<u64, Grant>,
    refresh_tokens: HashMap<String, TokenRef>,
    dpop_jtis: HashMap<String, u64>,
    next_grant: u64,
}

fn err(code: ErrorCode, description: &str) -> OAuthError {
    OAuthError::new(code, description)
}

impl Provider {
    pub(crate) fn new(limits: ProviderLimits) -> Self {
        Self {
            limits,
            clients: HashMap::new(),
            codes: HashMap::new(),
            grants: HashMap::new(),
            refresh_tokens: HashMap::new(),
            dpop_jtis: HashMap::new(),
            next_grant: 1,
        }
    }

    /// Registers (or replaces) a client. A client with a secret is confidential.
    pub(crate) fn register_client(&mut self, client: ClientConfig) -> Result<(), MockError> {
        if client.client_id.is_empty() {
            return Err(MockError::Invalid("client_id must not be empty".into()));
        }
        let secret_digest = match client.client_secret {
            Some(s) if s.is_empty() => {
                return Err(MockError::Invalid("client_secret must not be empty".into()));
            }
            Some(s) => Some(sha256_b64url(s.as_bytes())),
            None => None,
        };
        self.clients.insert(
            client.client_id,
            Client {
                secret_digest,
                tenant: client.tenant,
                roles: client.roles,
                scope: client.scope,
            },
        );
        Ok(())
    }

    /// Creates a signed-in grant and returns its one-time authorization code. An unknown
    /// `client_id` is registered as a public client.
    pub(crate) fn create_code(
        &mut self,
        grant: GrantRequest,
        now: u64,
    ) -> Result<String, MockError> {
        for (field, value) in [
            ("user", &grant.user),
            ("tenant", &grant.tenant),
            ("client_id", &grant.client_id),
        ] {
            if value.is_empty() {
                return Err(MockError::Invalid(format!("`{field}` must not be empty")));
            }
        }
        if let Some(challenge) = &grant.code_challenge {
            if crate::jose::b64url_decode_canonical(challenge).map(|d| d.len()) != Some(32) {
                return Err(MockError::Invalid(
                    "`code_challenge` must be an S256 challenge (43 base64url characters)".into(),
                ));
            }
        }
        if self.codes.len() >= self.limits.codes_max {
            self.codes.retain(|_, c| c.expires_at > now);
            if self.codes.len() >= self.limits.codes_max {
                return Err(MockError::Capacity("codes"));
            }
        }
        if !self.clients.contains_key(&grant.client_id) {
            self.register_client(ClientConfig::public(&grant.client_id))?;
        }
        let code = random_b64url(32)?;
        let auth_time = grant.auth_time.unwrap_or(now);
        self.codes.insert(
            code.clone(),
            PendingCode {
                grant,
                auth_time,
                expires_at: now.saturating_add(self.limits.code_ttl_secs),
                redeemed_as: None,
            },
        );
        Ok(code)
    }

    /// Revokes every grant of `user`; returns how many.
    pub(crate) fn revoke_user(&mut self, user: &str) -> usize {
        let ids: Vec<u64> = self
            .grants
            .iter()
            .filter(|(_, g)| g.req.user == user)
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            self.revoke_grant(*id);
        }
        ids.len()
    }

    /// Live grants (for tests and the demo's status).
    pub(crate) fn grant_count(&self) -> usize {
        self.grants.len()
    }

    fn revoke_grant(&mut self, id: u64) {
        if let Some(grant) = self.grants.remove(&id) {
            for token in grant.tokens {
                self.refresh_tokens.remove(&token);
            }
        }
    }

    /// The token endpoint: client authentication, DPoP replay, then the grant type's rules.
    pub(crate) fn token(&mut self, input: TokenInput<'_>) -> Result<Issue, OAuthError> {
        let client_id = self.authenticate(&input)?;
        if let Some(proof) = &input.proof {
            self.remember_dpop_jti(proof, input.now)?;
        }
        match input.form.get("grant_type").map(String::as_str) {
            None => Err(err(ErrorCode::InvalidRequest, "missing grant_type")),
            Some("authorization_code") => self.redeem_code(&client_id, &input),
            Some("refresh_token") => self.refresh(&client_id, &input),
            Some("client_credentials") => self.client_credentials(&client_id, &input),
            Some(_) => Err(err(
                ErrorCode::UnsupportedGrantType,
                "grant type not supported",
            )),
        }
    }

    /// RFC 6749 §2.3: `client_secret_basic`, `client_secret_post`, or `none` for public
    /// clients. Exactly one method per request.
    fn authenticate(&self, input: &TokenInput<'_>) -> Result<String, OAuthError> {
        let form_id = input.form.get("client_id");
        let form_secret = input.form.get("client_secret");
        let (client_id, secret) = match (&input.basic, form_secret) {
            (Some(_), Some(_)) => {
                return Err(err(
                    ErrorCode::InvalidRequest,
                    "more than one client authentication method",
                ));
            }
            (Some(basic), None) => {
                if form_id.is_some_and(|id| *id != basic.client_id) {
                    return Err(err(
                        ErrorCode::InvalidRequest,
                        "client_id differs from the Basic credentials",
                    ));
                }
                (basic.client_id.clone(), Some(basic.secret.as_str()))
            }
            (None, secret) => match form_id {
                Some(id) => (id.clone(), secret.map(String::as_str)),
                None => {
                    return Err(err(
                        ErrorCode::InvalidClient,
                        "client authentication missing",
                    ));
                }
            },
        };
        let client = self
            .clients
            .get(&client_id)
            .ok_or_else(|| err(ErrorCode::InvalidClient, "unknown client"))?;
        match (&client.secret_digest, secret) {
            (None, None) => Ok(client_id),
            (None, Some(_)) => Err(err(ErrorCode::InvalidClient, "public client sent a secret")),
            (Some(_), None) => Err(err(
                ErrorCode::InvalidClient,
                "confidential client must authenticate",
            )),
            (Some(expected), Some(given)) => {
                if *expected == sha256_b64url(given.as_bytes()) {
                    Ok(client_id)
                } else {
                    Err(err(
                        ErrorCode::InvalidClient,
                        "client authentication failed",
                    ))
                }
            }
        }
    }

    fn remember_dpop_jti(&mut self, proof: &VerifiedProof, now: u64) -> Result<(), OAuthError> {
        let oldest = now.saturating_sub(self.limits.dpop_iat_window_secs);
        if self.dpop_jtis.len() >= self.limits.dpop_jtis_max {
            self.dpop_jtis.retain(|_, iat| *iat >= oldest);
            if self.dpop_jtis.len() >= self.limits.dpop_jtis_max {
                return Err(err(
                    ErrorCode::TemporarilyUnavailable,
                    "DPoP replay memory full",
                ));
            }
        }
        if self
            .dpop_jtis
            .insert(proof.jti.clone(), proof.iat)
            .is_some()
        {
            return Err(err(ErrorCode::InvalidDpopProof, "DPoP proof jti replayed"));
        }
        Ok(())
    }

    fn redeem_code(
        &mut self,
        client_id: &str,
        input: &TokenInput<'_>,
    ) -> Result<Issue, OAuthError> {
        let code = input
            .form
            .get("code")
            .ok_or_else(|| err(ErrorCode::InvalidRequest, "missing code"))?;
        let pending = self
            .codes
            .get(code)
            .ok_or_else(|| err(ErrorCode::InvalidGrant, "invalid code"))?;
        if pending.expires_at <= input.now || pending.grant.client_id != client_id {
            return Err(err(ErrorCode::InvalidGrant, "invalid code"));
        }
        if let Some(grant_id) = pending.redeemed_as {
            // RFC 6749 §4.1.2: a code used twice revokes what it granted.
            self.revoke_grant(grant_id);
            return Err(err(ErrorCode::InvalidGrant, "invalid code"));
        }
        if pending.grant.redirect_uri.as_deref()
            != input.form.get("redirect_uri").map(String::as_str)
        {
            return Err(err(ErrorCode::InvalidGrant, "redirect_uri mismatch"));
        }
        if let Some(challenge) = &pending.grant.code_challenge {
            let verifier = input
                .form
                .get("code_verifier")
                .ok_or_else(|| err(ErrorCode::InvalidGrant, "PKCE verifier missing"))?;
            if sha256_b64url(verifier.as_bytes()) != *challenge {
                return Err(err(ErrorCode::InvalidGrant, "PKCE verification failed"));
            }
        }
        let req = pending.grant.clone();
        let auth_time = pending.auth_time;
        if self.grants.len() >= self.limits.grants_max {
            return Err(err(
                ErrorCode::TemporarilyUnavailable,
                "grant capacity reached",
            ));
        }
        let grant_id = self.next_grant;
        self.next_grant = self.next_grant.saturating_add(1);
        if let Some(pending) = self.codes.get_mut(code) {
            pending.redeemed_as = Some(grant_id);
        }
        let refresh = random_b64url(32).map_err(internal)?;
        let grant = Grant {
            req,
            auth_time,
            jkt: input.proof.as_ref().map(|p| p.jkt.clone()),
            generation: 0,
            tokens: VecDeque::from([refresh.clone()]),
        };
        self.refresh_tokens.insert(
            refresh.clone(),
            TokenRef {
                grant: grant_id,
                generation: 0,
            },
        );
        let scope = grant.req.scope.clone();
        let issue = self.issue_user_tokens(&grant, &scope, input, refresh)?;
        self.grants.insert(grant_id, grant);
        Ok(issue)
    }

    fn refresh(&mut self, client_id: &str, input: &TokenInput<'_>) -> Result<Issue, OAuthError> {
        let presented = input
            .form
            .get("refresh_token")
            .ok_or_else(|| err(ErrorCode::InvalidRequest, "missing refresh_token"))?;
        let token_ref = *self
            .refresh_tokens
            .get(presented)
            .ok_or_else(|| err(ErrorCode::InvalidGrant, "invalid refresh token"))?;
        let grant = self
            .grants
            .get_mut(&token_ref.grant)
            .ok_or_else(|| err(ErrorCode::InvalidGrant, "invalid refresh token"))?;
        if grant.req.client_id != client_id {
            return Err(err(ErrorCode::InvalidGrant, "invalid refresh token"));
        }
        if token_ref.generation != grant.generation {
            // Reuse of a rotated-out token: the family is compromised, revoke all of it.
            self.revoke_grant(token_ref.grant);
            return Err(err(ErrorCode::InvalidGrant, "invalid refresh token"));
        }
        if let Some(bound) = &grant.jkt {
            match &input.proof {
                None => {
                    return Err(err(
                        ErrorCode::InvalidDpopProof,
                        "DPoP proof required for a DPoP-bound refresh token",
                    ));
                }
                Some(proof) if proof.jkt != *bound => {
                    return Err(err(
                        ErrorCode::InvalidGrant,
                        "refresh token is bound to another DPoP key",
                    ));
                }
                Some(_) => {}
            }
        }
        // Rotate first, check scope and resource after: real providers consume the token even
        // when the refresh then fails (FIELD-NOTES), and tests of backstop need that hazard.
        let refresh = random_b64url(32).map_err(internal)?;
        grant.generation = grant.generation.saturating_add(1);
        grant.tokens.push_back(refresh.clone());
        self.refresh_tokens.insert(
            refresh.clone(),
            TokenRef {
                grant: token_ref.grant,
                generation: grant.generation,
            },
        );
        while grant.tokens.len() > ROTATED_KEPT_PER_GRANT + 1 {
            if let Some(old) = grant.tokens.pop_front() {
                self.refresh_tokens.remove(&old);
            }
        }
        let scope = match input.form.get("scope") {
            None => grant.req.scope.clone(),
            Some(asked) => {
                let granted: Vec<&str> = grant.req.scope.split(' ').collect();
                if !asked.split(' ').all(|s| granted.contains(&s)) {
                    return Err(err(ErrorCode::InvalidScope, "scope exceeds the grant"));
                }
                asked.clone()
            }
        };
        if let Some(resource) = input.form.get("resource") {
            if grant.req.resource.as_ref() != Some(resource) {
                return Err(err(
                    ErrorCode::InvalidTarget,
                    "resource not part of the grant",
                ));
            }
        }
        let grant = self
            .grants
            .get(&token_ref.grant)
            .ok_or_else(|| err(ErrorCode::InvalidGrant, "invalid refresh token"))?;
        self.issue_user_tokens(grant, &scope, input, refresh)
    }

    fn issue_user_tokens(
        &self,
        grant: &Grant,
        scope: &str,
        input: &TokenInput<'_>,
        refresh: String,
    ) -> Result<Issue, OAuthError> {
        let req = &grant.req;
        let now = input.now;
        // A bound grant's tokens are bound to its key; an unbound grant refreshed with a proof
        // gets a bound access token while the refresh token stays unbound (RFC 9449 §5).
        let jkt = grant
            .jkt
            .clone()
            .or_else(|| input.proof.as_ref().map(|p| p.jkt.clone()));
        let mut at = Map::new();
        at.insert("iss".into(), json!(input.issuer));
        at.insert("sub".into(), json!(req.user));
        at.insert(
            "aud".into(),
            json!(
                req.resource
                    .clone()
                    .unwrap_or_else(|| req.client_id.clone())
            ),
        );
        at.insert("client_id".into(), json!(req.client_id));
        at.insert("scope".into(), json!(scope));
        at.insert("iat".into(), json!(now));
        at.insert(
            "exp".into(),
            json!(now.saturating_add(self.limits.access_token_ttl_secs)),
        );
        at.insert("jti".into(), json!(random_b64url(16).map_err(internal)?));
        at.insert("amr".into(), json!(req.amr));
        at.insert("groups".into(), json!(req.groups));
        at.insert("roles".into(), json!(req.roles));
        at.insert("tid".into(), json!(req.tenant));
        if let Some(device) = &req.device {
            at.insert("device_id".into(), json!(device));
        }
        if let Some(jkt) = &jkt {
            at.insert("cnf".into(), json!({ "jkt": jkt }));
        }
        at.extend(req.extra_claims.clone());
        let id_claims = if scope.split(' ').any(|s| s == "openid") {
            let mut id = Map::new();
            id.insert("iss".into(), json!(input.issuer));
            id.insert("sub".into(), json!(req.user));
            id.insert("aud".into(), json!(req.client_id));
            id.insert("azp".into(), json!(req.client_id));
            id.insert("iat".into(), json!(now));
            id.insert(
                "exp".into(),
                json!(now.saturating_add(self.limits.id_token_ttl_secs)),
            );
            id.insert("auth_time".into(), json!(grant.auth_time));
            if let Some(nonce) = &req.nonce {
                id.insert("nonce".into(), json!(nonce));
            }
            id.insert("amr".into(), json!(req.amr));
            if let Some(acr) = &req.acr {
                id.insert("acr".into(), json!(acr));
            }
            id.insert("tid".into(), json!(req.tenant));
            if let Some(device) = &req.device {
                id.insert("device_id".into(), json!(device));
            }
            id.extend(req.extra_claims.clone());
            Some(Value::Object(id))
        } else {
            None
        };
        Ok(Issue {
            access_claims: Value::Object(at),
            id_claims,
            refresh_token: Some(refresh),
            token_type: if jkt.is_some() { "DPoP" } else { "Bearer" },
            expires_in: self.limits.access_token_ttl_secs,
            scope: scope.to_string(),
        })
    }

    fn client_credentials(
        &mut self,
        client_id: &str,
        input: &TokenInput<'_>,
    ) -> Result<Issue, OAuthError> {
        let client = self
            .clients
            .get(client_id)
            .ok_or_else(|| err(ErrorCode::InvalidClient, "unknown client"))?;
        if client.secret_digest.is_none() {
            return Err(err(
                ErrorCode::UnauthorizedClient,
                "public clients cannot use client_credentials",
            ));
        }
        let scope = match (input.form.get("scope"), &client.scope) {
            (Some(asked), Some(allowed)) => {
                let allowed: Vec<&str> = allowed.split(' ').collect();
                if !asked.split(' ').all(|s| allowed.contains(&s)) {
                    return Err(err(
                        ErrorCode::InvalidScope,
                        "scope not allowed for this client",
                    ));
                }
                asked.clone()
            }
            (Some(asked), None) => asked.clone(),
            (None, allowed) => allowed.clone().unwrap_or_default(),
        };
        let now = input.now;
        let mut at = Map::new();
        at.insert("iss".into(), json!(input.issuer));
        at.insert("sub".into(), json!(client_id));
        at.insert(
            "aud".into(),
            json!(input.form.get("resource").map_or(client_id, String::as_str)),
        );
        at.insert("client_id".into(), json!(client_id));
        at.insert("scope".into(), json!(scope));
        at.insert("iat".into(), json!(now));
        at.insert(
            "exp".into(),
            json!(now.saturating_add(self.limits.access_token_ttl_secs)),
        );
        at.insert("jti".into(), json!(random_b64url(16).map_err(internal)?));
        at.insert("roles".into(), json!(client.roles));
        if let Some(tenant) = &client.tenant {
            at.insert("tid".into(), json!(tenant));
        }
        if let Some(proof) = &input.proof {
            at.insert("cnf".into(), json!({ "jkt": proof.jkt }));
        }
        Ok(Issue {
            access_claims: Value::Object(at),
            id_claims: None,
            refresh_token: None,
            token_type: if input.proof.is_some() {
                "DPoP"
            } else {
                "Bearer"
            },
            expires_in: self.limits.access_token_ttl_secs,
            scope,
        })
    }
}

fn internal(e: MockError) -> OAuthError {
    OAuthError::new(ErrorCode::ServerError, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ProviderLimits {
        ProviderLimits {
            access_token_ttl_secs: 300,
            id_token_ttl_secs: 300,
            code_ttl_secs: 60,
            dpop_iat_window_secs: 300,
            grants_max: 100,
            codes_max: 100,
            dpop_jtis_max: 100,
        }
    }

    fn form(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn run(p: &mut Provider, f: &BTreeMap<String, String>, now: u64) -> Result<Issue, OAuthError> {
        p.token(TokenInput {
            form: f,
            basic: None,
            proof: None,
            issuer: "http://iss",
            now,
        })
    }

    #[test]
    fn code_is_one_time_and_second_use_revokes_the_grant() {
        let mut p = Provider::new(limits());
        let code = p
            .create_code(
                GrantRequest::new("u", "t", "app", "openid offline_access"),
                10,
            )
            .unwrap();
        let f = form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", "app"),
        ]);
        let first = run(&mut p, &f, 11).unwrap();
        assert_eq!(p.grant_count(), 1);
        assert_eq!(
            run(&mut p, &f, 12).unwrap_err().code,
            ErrorCode::InvalidGrant
        );
        assert_eq!(p.grant_count(), 0);
        let rt = first.refresh_token.unwrap();
        let f = form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt),
            ("client_id", "app"),
        ]);
        assert_eq!(
            run(&mut p, &f, 13).unwrap_err().code,
            ErrorCode::InvalidGrant
        );
    }

    #[test]
    fn expired_code_and_other_clients_code_are_invalid_grant() {
        let mut p = Provider::new(limits());
        p.create_code(GrantRequest::new("u", "t", "other", "openid"), 0)
            .unwrap();
        let code = p
            .create_code(GrantRequest::new("u", "t", "app", "openid"), 0)
            .unwrap();
        let f = form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", "other"),
        ]);
        assert_eq!(
            run(&mut p, &f, 1).unwrap_err().code,
            ErrorCode::InvalidGrant
        );
        let f = form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", "app"),
        ]);
        assert_eq!(
            run(&mut p, &f, 61).unwrap_err().code,
            ErrorCode::InvalidGrant
        );
    }

    #[test]
    fn failed_scope_check_still_consumes_the_refresh_token() {
        let mut p = Provider::new(limits());
        let code = p
            .create_code(GrantRequest::new("u", "t", "app", "openid a"), 0)
            .unwrap();
        let f = form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", "app"),
        ]);
        let rt = run(&mut p, &f, 1).unwrap().refresh_token.unwrap();
        let f = form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt),
            ("client_id", "app"),
            ("scope", "b"),
        ]);
        assert_eq!(
            run(&mut p, &f, 2).unwrap_err().code,
            ErrorCode::InvalidScope
        );
        let f = form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt),
            ("client_id", "app"),
        ]);
        assert_eq!(
            run(&mut p, &f, 3).unwrap_err().code,
            ErrorCode::InvalidGrant
        );
        assert_eq!(
            p.grant_count(),
            0,
            "reuse after the consuming failure revokes the grant"
        );
    }

    #[test]
    fn pkce_s256_is_enforced_when_the_grant_has_a_challenge() {
        let mut p = Provider::new(limits());
        let mut g = GrantRequest::new("u", "t", "app", "openid");
        let verifier = "a-verifier-that-is-long-enough-for-pkce-0123456789";
        g.code_challenge = Some(sha256_b64url(verifier.as_bytes()));
        let code = p.create_code(g, 0).unwrap();
        let bad = form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", "app"),
            ("code_verifier", "wrong"),
        ]);
        assert_eq!(
            run(&mut p, &bad, 1).unwrap_err().code,
            ErrorCode::InvalidGrant
        );
        let good = form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", "app"),
            ("code_verifier", verifier),
        ]);
        assert!(run(&mut p, &good, 1).is_ok());
    }

    #[test]
    fn old_rotated_tokens_are_forgotten_beyond_the_cap() {
        let mut p = Provider::new(limits());
        let code = p
            .create_code(GrantRequest::new("u", "t", "app", "x"), 0)
            .unwrap();
        let f = form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", "app"),
        ]);
        let mut rt = run(&mut p, &f, 1).unwrap().refresh_token.unwrap();
        let first = rt.clone();
        for i in 0..(ROTATED_KEPT_PER_GRANT + 5) {
            let f = form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", &rt),
                ("client_id", "app"),
            ]);
            rt = run(&mut p, &f, 2 + i as u64)
                .unwrap()
                .refresh_token
                .unwrap();
        }
        assert!(p.refresh_tokens.len() <= ROTATED_KEPT_PER_GRANT + 1);
        // The forgotten first token is just unknown: the grant survives.
        let f = form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &first),
            ("client_id", "app"),
        ]);
        assert_eq!(
            run(&mut p, &f, 100).unwrap_err().code,
            ErrorCode::InvalidGrant
        );
        assert_eq!(p.grant_count(), 1);
    }
}

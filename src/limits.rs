//! Every bound on outside input and every capacity, in one place, with the reason for each.
//!
//! Configurable limits keep their default and their allowed range here; `config` checks a
//! configured value against the range and names the field when it is out of it. Fixed limits
//! are plain constants. Compile-time asserts pin how bounds relate to each other.

/// An inclusive range a configurable limit must fall in, with its default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    /// Smallest allowed value.
    pub min: u64,
    /// Largest allowed value.
    pub max: u64,
    /// Value used when the configuration does not set one.
    pub default: u64,
}

impl Bound {
    /// Whether `value` is inside the bound.
    pub const fn allows(&self, value: u64) -> bool {
        value >= self.min && value <= self.max
    }

    const fn is_coherent(&self) -> bool {
        self.min <= self.default && self.default <= self.max
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP server (issue 2). Each is configurable under `[limits]`.
// ---------------------------------------------------------------------------------------------

/// Bytes of the request head (request line plus all header lines). Over it: 431 and close.
/// Token requests carry a few small headers; 16 KiB leaves room for a DPoP proof and cookies.
pub const HEADER_BYTES: Bound = Bound {
    min: 1024,
    max: 256 * 1024,
    default: 16 * 1024,
};

/// Number of header lines in one request. Over it: 431 and close. The default is hyper's stack
/// allocation size; any other value costs hyper one allocation per request.
pub const HEADER_COUNT: Bound = Bound {
    min: 8,
    max: 512,
    default: 100,
};

/// Bytes of a request body. Over it: 413. A token request is a short form; 64 KiB is generous.
pub const BODY_BYTES: Bound = Bound {
    min: 1024,
    max: 16 * 1024 * 1024,
    default: 64 * 1024,
};

/// Bytes of the request target (path and query). Over it: 414.
pub const REQUEST_LINE_BYTES: Bound = Bound {
    min: 256,
    max: 64 * 1024,
    default: 8 * 1024,
};

/// Milliseconds an idle keep-alive connection may wait for the first byte of its next request.
pub const KEEP_ALIVE_IDLE_MS: Bound = Bound {
    min: 100,
    max: 3_600_000,
    default: 60_000,
};

/// Milliseconds from the first byte of a request head to its last (slowloris). Over it: closed.
pub const HEADER_READ_TIMEOUT_MS: Bound = Bound {
    min: 100,
    max: 300_000,
    default: 10_000,
};

/// Milliseconds to receive a whole request body once the head is in. Over it: 408.
pub const BODY_READ_TIMEOUT_MS: Bound = Bound {
    min: 100,
    max: 300_000,
    default: 10_000,
};

/// Open client connections per worker thread. Over it: 503 and close.
pub const CONNECTIONS_PER_WORKER: Bound = Bound {
    min: 1,
    max: 1_000_000,
    default: 10_000,
};

/// Milliseconds a graceful shutdown waits for in-flight requests before closing them.
pub const SHUTDOWN_GRACE_MS: Bound = Bound {
    min: 0,
    max: 600_000,
    default: 10_000,
};

/// Worker threads. 0 in the configuration means one per core.
pub const WORKERS: Bound = Bound {
    min: 0,
    max: 1024,
    default: 0,
};

/// Bytes of a configuration file we are willing to read.
pub const CONFIG_FILE_BYTES_MAX: u64 = 1024 * 1024;

/// Bytes of a file holding a secret (admin token, passphrase).
pub const SECRET_FILE_BYTES_MAX: u64 = 4096;

/// Shortest admin bearer token accepted: 128 bits of base64 or hex is at least 22 characters.
pub const ADMIN_TOKEN_CHARS_MIN: usize = 22;

/// Bytes of an admin API request body.
pub const ADMIN_BODY_BYTES_MAX: u64 = 1024 * 1024;

const _: () = {
    assert!(HEADER_BYTES.is_coherent());
    assert!(HEADER_COUNT.is_coherent());
    assert!(BODY_BYTES.is_coherent());
    assert!(REQUEST_LINE_BYTES.is_coherent());
    assert!(KEEP_ALIVE_IDLE_MS.is_coherent());
    assert!(HEADER_READ_TIMEOUT_MS.is_coherent());
    assert!(BODY_READ_TIMEOUT_MS.is_coherent());
    assert!(CONNECTIONS_PER_WORKER.is_coherent());
    assert!(SHUTDOWN_GRACE_MS.is_coherent());
    assert!(WORKERS.is_coherent());
    // The request line is part of the head, so its default must fit in the default head.
    assert!(REQUEST_LINE_BYTES.default < HEADER_BYTES.default);
    // hyper needs at least 8 KiB of read buffer for a head; our floor keeps a margin above the
    // request-line floor.
    assert!(HEADER_BYTES.min > REQUEST_LINE_BYTES.min);
};

// ---------------------------------------------------------------------------------------------
// Upstream (the primary) and the circuit breaker (issue 5). Configurable under `[primary]` and
// `[failover]`.
// ---------------------------------------------------------------------------------------------

/// Milliseconds to establish a connection (TCP and TLS) to the primary.
pub const UPSTREAM_CONNECT_TIMEOUT_MS: Bound = Bound {
    min: 10,
    max: 60_000,
    default: 1_000,
};

/// Milliseconds from sending a request to the primary to its response head. A client waits
/// this long before the backup answers, until the breaker opens: keep it short.
pub const UPSTREAM_REQUEST_TIMEOUT_MS: Bound = Bound {
    min: 50,
    max: 120_000,
    default: 3_000,
};

/// Consecutive unexpected upstream failures (per worker) that open the breaker.
pub const BREAKER_CONSECUTIVE_FAILURES: Bound = Bound {
    min: 1,
    max: 1_000,
    default: 5,
};

/// Forwarded requests in the breaker's sliding window (per worker).
pub const BREAKER_WINDOW_LEN: Bound = Bound {
    min: 1,
    max: 64,
    default: 20,
};

/// Failures within the window that open the breaker.
pub const BREAKER_WINDOW_FAILURES: Bound = Bound {
    min: 1,
    max: 64,
    default: 10,
};

/// Milliseconds the breaker stays open before its first probe.
pub const BREAKER_OPEN_INITIAL_MS: Bound = Bound {
    min: 10,
    max: 600_000,
    default: 1_000,
};

/// Cap on the open time as failed probes double it.
pub const BREAKER_OPEN_MAX_MS: Bound = Bound {
    min: 10,
    max: 3_600_000,
    default: 60_000,
};

/// Bytes of a primary response body that backstop buffers (token responses it must read).
pub const UPSTREAM_BUFFERED_BODY_BYTES_MAX: usize = 1024 * 1024;

/// Idle pooled connections kept per worker to the primary.
pub const UPSTREAM_POOL_IDLE_PER_WORKER: usize = 64;

const _: () = {
    assert!(UPSTREAM_CONNECT_TIMEOUT_MS.is_coherent());
    assert!(UPSTREAM_REQUEST_TIMEOUT_MS.is_coherent());
    assert!(BREAKER_CONSECUTIVE_FAILURES.is_coherent());
    assert!(BREAKER_WINDOW_LEN.is_coherent());
    assert!(BREAKER_WINDOW_FAILURES.is_coherent());
    assert!(BREAKER_OPEN_INITIAL_MS.is_coherent());
    assert!(BREAKER_OPEN_MAX_MS.is_coherent());
    // The connect timeout must fire before the request timeout, so a refused or unreachable
    // primary is classified as a clean connect failure, not an ambiguous timeout.
    assert!(UPSTREAM_CONNECT_TIMEOUT_MS.default < UPSTREAM_REQUEST_TIMEOUT_MS.default);
    assert!(BREAKER_WINDOW_FAILURES.default <= BREAKER_WINDOW_LEN.default);
    assert!(BREAKER_OPEN_INITIAL_MS.default <= BREAKER_OPEN_MAX_MS.default);
};

// ---------------------------------------------------------------------------------------------
// Audit log (issue 5).
// ---------------------------------------------------------------------------------------------

/// Bytes of one audit file before it is rotated.
pub const AUDIT_FILE_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// Rotated audit files kept besides the current one (so at most 9 × 64 MiB on disk).
pub const AUDIT_FILES_KEPT: u32 = 8;

/// Audit records queued for the writer before new ones are dropped (and counted).
pub const AUDIT_QUEUE_LEN: usize = 65_536;

// ---------------------------------------------------------------------------------------------
// OAuth protocol parsing (issue 5). Fixed: a token request that needs more is not one.
// ---------------------------------------------------------------------------------------------

/// Parameters in one form-encoded request body.
pub const FORM_FIELDS_MAX: usize = 32;

/// Bytes of one form parameter name, after percent-decoding.
pub const FORM_NAME_BYTES_MAX: usize = 64;

/// Bytes of one form parameter value, after percent-decoding. Large enough for a signed
/// `client_assertion` JWT with an embedded certificate chain, nothing more.
pub const FORM_VALUE_BYTES_MAX: usize = 16 * 1024;

/// Bytes of a client_id or client secret.
pub const CLIENT_CREDENTIAL_BYTES_MAX: usize = 1024;

/// Repeated `resource` parameters (RFC 8707 allows several) in one request.
pub const RESOURCES_PER_REQUEST_MAX: usize = 8;

const _: () = {
    assert!(FORM_VALUE_BYTES_MAX as u64 <= BODY_BYTES.default);
    assert!(CLIENT_CREDENTIAL_BYTES_MAX <= FORM_VALUE_BYTES_MAX);
    assert!(RESOURCES_PER_REQUEST_MAX < FORM_FIELDS_MAX);
};

// ---------------------------------------------------------------------------------------------
// Store (issue 3): append store limits below this line.
// ---------------------------------------------------------------------------------------------

/// Shards of the session store. Fixed when a store is created (keys are routed by hash modulo
/// this), so a reopen with another value is refused. 64 keeps segments small enough that a
/// full-shard compaction stays short, and is far below the open-file budget.
pub const STORE_SHARDS: Bound = Bound {
    min: 1,
    max: 4096,
    default: 64,
};

/// WAL writer groups: each owns one WAL file, one writer thread, and one fsync per batch. On two
/// cores two writers keep the disk busy; more only adds fsyncs.
pub const STORE_WAL_GROUPS: Bound = Bound {
    min: 1,
    max: 64,
    default: 2,
};

/// Bytes of one encoded record (a session snapshot with its claim templates). A real snapshot
/// is a few KiB; 256 KiB bounds what a corrupt length prefix can make us allocate.
pub const STORE_RECORD_BYTES_MAX: u32 = 256 * 1024;

/// Bytes of one identifier (tenant, user, device, app, resource) or one list item.
pub const STORE_IDENTIFIER_BYTES_MAX: usize = 4096;

/// Bytes of a pre-serialized claims template.
pub const STORE_TEMPLATE_BYTES_MAX: usize = 64 * 1024;

/// Records written by one group commit (one write + one fsync).
pub const STORE_BATCH_RECORDS_MAX: usize = 16 * 1024;

/// Queued writes per WAL group before `put_*` waits (backpressure instead of unbounded memory).
pub const STORE_QUEUE_RECORDS_MAX: usize = 64 * 1024;

/// Bytes in a shard's in-memory table that make the background compactor flush its group.
pub const STORE_MEMTABLE_BYTES: Bound = Bound {
    min: 64 * 1024,
    max: 16 * 1024 * 1024 * 1024,
    default: 256 * 1024 * 1024,
};

/// Background compactor ticks (seconds) with a non-empty in-memory table before it flushes
/// anyway, so the WAL replayed at the next open stays short.
pub const STORE_COMPACT_AGE_SECS: Bound = Bound {
    min: 1,
    max: 86_400,
    default: 300,
};

/// Segment bytes (summed over the store) up to which open validates every segment in full
/// before serving. Above it, open maps and serves at once (reads use rkyv's checked access
/// per record) while a background thread validates, so a large store opens without a load step.
pub const STORE_SEGMENT_FOREGROUND_VALIDATE_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// Index slots of one segment: bounds what a corrupt header can make us probe.
pub const STORE_SEGMENT_SLOTS_MAX: u64 = 1 << 32;

const _: () = {
    assert!(STORE_SHARDS.is_coherent());
    assert!(STORE_WAL_GROUPS.is_coherent());
    assert!(STORE_MEMTABLE_BYTES.is_coherent());
    assert!(STORE_COMPACT_AGE_SECS.is_coherent());
    // A group never has more WAL files than there are shards to route into it.
    assert!(STORE_WAL_GROUPS.max <= STORE_SHARDS.max);
    // A batch must fit in the queue that feeds it.
    assert!(STORE_BATCH_RECORDS_MAX <= STORE_QUEUE_RECORDS_MAX);
    // A record holds two templates and its identifiers.
    assert!(2 * STORE_TEMPLATE_BYTES_MAX < STORE_RECORD_BYTES_MAX as usize);
};

// ---------------------------------------------------------------------------------------------
// Token (issue 4): append token and JOSE limits below this line.
// ---------------------------------------------------------------------------------------------

/// Bytes of a JWS compact token from outside (a primary's token, a client assertion, a SET).
/// Real access and ID tokens run 1–4 KiB; 16 KiB leaves room for large group claims and still
/// fits well inside the default request head and body.
pub const JWS_COMPACT_BYTES_MAX: usize = 16 * 1024;

/// Bytes of a decoded JOSE header. A header holds a handful of short members, or one embedded
/// public key (DPoP, where only EC P-256 and Ed25519 keys are accepted).
pub const JOSE_HEADER_BYTES_MAX: usize = 2 * 1024;

/// Nesting depth of JOSE JSON (header, claims, JWK). Claims nest two or three levels in practice
/// (`cnf.jkt`, address); a bound keeps a hostile token from costing stack.
pub const JOSE_JSON_DEPTH_MAX: usize = 16;

/// Bytes of a DPoP proof (RFC 9449): a small header with an EC or OKP key and five claims.
pub const DPOP_PROOF_BYTES_MAX: usize = 4 * 1024;

/// Bytes of a DPoP proof's `jti`. RFC 9449 asks for 96 bits of randomness; 256 bytes is generous.
pub const DPOP_JTI_BYTES_MAX: usize = 256;

/// Seconds a DPoP proof stays acceptable after its `iat`. RFC 9449 §11.1 suggests seconds to
/// minutes; configurable as `limits.dpop_proof_age_secs`.
pub const DPOP_PROOF_AGE_SECS: Bound = Bound {
    min: 5,
    max: 600,
    default: 60,
};

/// Seconds a DPoP proof's `iat` may lie in our future (client clock ahead of ours).
pub const DPOP_CLOCK_SKEW_SECS: u64 = 5;

/// `jti`s remembered per DPoP replay cache. When full of unexpired entries a new proof is
/// refused (fail closed) rather than forgetting one that could then be replayed.
pub const DPOP_REPLAY_ENTRIES: Bound = Bound {
    min: 1024,
    max: 16 * 1024 * 1024,
    default: 1 << 20,
};

/// Seconds of clock skew allowed when checking `exp` and `nbf` of a token from outside.
pub const JWT_LEEWAY_SECS: Bound = Bound {
    min: 0,
    max: 300,
    default: 60,
};

/// Bytes of a JWKS document fetched from a primary or a SET transmitter.
pub const JWKS_DOCUMENT_BYTES_MAX: usize = 256 * 1024;

/// Keys in one JWKS document. Providers publish a few (current, next, previous per algorithm).
pub const JWKS_KEYS_MAX: usize = 64;

/// Seconds between scheduled refreshes of a remote JWKS.
pub const JWKS_REFRESH_SECS: Bound = Bound {
    min: 60,
    max: 86_400,
    default: 3_600,
};

/// Seconds between refreshes triggered by an unknown `kid`: a stream of tokens with made-up
/// kids must not become a stream of fetches to the primary.
pub const JWKS_UNKNOWN_KID_REFRESH_SECS: u64 = 60;

/// Largest backoff, in seconds, after failed JWKS fetches (doubling from 1 s).
pub const JWKS_FAILURE_BACKOFF_SECS_MAX: u64 = 300;

/// Bytes of a pre-serialized claims template (a primary's claims minus time claims).
pub const CLAIMS_TEMPLATE_BYTES_MAX: usize = 8 * 1024;

/// Bytes of a key file in the keyring (PKCS#8 PEM). An RSA-4096 key is about 3.3 KiB.
pub const KEY_FILE_BYTES_MAX: u64 = 16 * 1024;

const _: () = {
    assert!(DPOP_PROOF_AGE_SECS.is_coherent());
    assert!(DPOP_REPLAY_ENTRIES.is_coherent());
    assert!(JWT_LEEWAY_SECS.is_coherent());
    assert!(JWKS_REFRESH_SECS.is_coherent());
    // A DPoP proof is a JWS, and its header must fit the header bound.
    assert!(DPOP_PROOF_BYTES_MAX <= JWS_COMPACT_BYTES_MAX);
    assert!(JOSE_HEADER_BYTES_MAX < DPOP_PROOF_BYTES_MAX);
    // A minted token is the template plus header, time claims and signature, base64url'd.
    assert!(CLAIMS_TEMPLATE_BYTES_MAX * 4 / 3 + 1024 <= JWS_COMPACT_BYTES_MAX);
    // Unknown-kid refreshes are rarer than the shortest scheduled refresh is frequent.
    assert!(JWKS_UNKNOWN_KID_REFRESH_SECS <= JWKS_REFRESH_SECS.min);
};

// ---------------------------------------------------------------------------------------------
// Revocation (issue 6).
// ---------------------------------------------------------------------------------------------

/// Revocation events kept in memory (inside the session window). Over it, inserting is an
/// error (`RevocationError::Full`): a revocation is never silently dropped, and the caller
/// decides whether to fail closed. `benches/revocation.rs` measures about 310 MiB of RSS per
/// million events (36-byte subject ids), so the default (2 M) costs about 0.6 GiB.
pub const REVOCATION_EVENTS: Bound = Bound {
    min: 1,
    max: 16_000_000,
    default: 2_000_000,
};

/// Bytes of a revocation event id (an admin-chosen id or a SET `jti`).
pub const REVOCATION_EVENT_ID_BYTES_MAX: usize = 256;

/// Bytes of a revocation subject's identifier (`sub`, device id, `sid` or `client_id`).
pub const REVOCATION_SUBJECT_ID_BYTES_MAX: usize = 512;

const _: () = {
    assert!(REVOCATION_EVENTS.is_coherent());
    // The filter's bitmap index is a u64 and its size a power of two over the event count.
    assert!(REVOCATION_EVENTS.max <= u32::MAX as u64);
};

// ---------------------------------------------------------------------------------------------
// Conditional Access policies (issue 6). Fixed: Entra caps a tenant at 195 policies and 195
// named locations, and a named location at 2,000 IP ranges; ours leave room above those.
// ---------------------------------------------------------------------------------------------

/// Bytes of one policy document (`{"conditionalAccessPolicies": [...], "namedLocations": [...]}`).
pub const POLICY_DOCUMENT_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Conditional Access policies in one document.
pub const POLICIES_MAX: usize = 512;

/// Named locations in one document.
pub const NAMED_LOCATIONS_MAX: usize = 512;

/// IP ranges (CIDRs) in one named location.
pub const NAMED_LOCATION_RANGES_MAX: usize = 2_000;

/// Entries in any one list of a policy (users, groups, apps, locations, risk levels, controls).
pub const POLICY_LIST_ENTRIES_MAX: usize = 1_024;

/// Bytes of one identifier or display name in a policy document.
pub const POLICY_STRING_BYTES_MAX: usize = 256;

/// Unknown-field paths kept for the load report; the rest are counted, not listed.
pub const POLICY_UNKNOWN_FIELDS_MAX: usize = 256;

const _: () = {
    // Entra's own caps (195 policies, 195 named locations, 2,000 ranges each) fit ours.
    assert!(POLICIES_MAX >= 195 && NAMED_LOCATIONS_MAX >= 195);
    assert!(NAMED_LOCATION_RANGES_MAX >= 2_000);
    assert!(POLICY_STRING_BYTES_MAX < POLICY_DOCUMENT_BYTES_MAX);
};

// ---------------------------------------------------------------------------------------------
// Normal-mode capture (issue 5): primary token responses → snapshots and artifacts, off the
// request path. The queue and the window are configurable under `[capture]`.
// ---------------------------------------------------------------------------------------------

/// Captures waiting for the capture worker. A full queue drops the capture and counts it
/// (`backstop_capture_dropped_total`); the response to the client never waits. A job holds
/// the primary's response body (a few KiB), so the default bounds the queue to tens of MiB.
pub const CAPTURE_QUEUE_LEN: Bound = Bound {
    min: 1,
    max: 1 << 20,
    default: 4096,
};

/// Seconds a snapshot stays servable after the primary's last successful authentication
/// (DESIGN §1: 3 days by default). At least an hour, at most 90 days.
pub const CAPTURE_SESSION_WINDOW_SECS: Bound = Bound {
    min: 3600,
    max: 90 * 24 * 3600,
    default: 3 * 24 * 3600,
};

/// Bytes of a primary token response the capture parses; a larger one is skipped
/// (`response_too_large`). Three JWTs of at most `JWS_COMPACT_BYTES_MAX` plus members.
pub const CAPTURE_RESPONSE_BYTES_MAX: usize = 64 * 1024;

/// Jobs the capture worker takes from its queue per batch: their writes are coalesced per key
/// and awaited together, so a batch costs about one group commit.
pub const CAPTURE_BATCH_JOBS_MAX: usize = 256;

/// Milliseconds the capture worker waits after a batch that did not fill, so that jobs gather
/// into the next one. While it waits, a send wakes no thread: the server's workers pay one
/// atomic operation per capture instead of a cross-thread wake-up (FIELD-NOTES: 80–90 µs of
/// latency, a futex call of CPU), at the cost of this much capture delay.
pub const CAPTURE_LINGER_MS: u64 = 5;

/// Successor links followed from a refused refresh token to the current one of its family.
/// A family longer than this (a client refreshing every minute for days) revokes only what it
/// reached and says so in the log.
pub const CAPTURE_SUCCESSOR_HOPS_MAX: usize = 64;

/// Bytes of a configured device header's value; a longer value is not used as the device
/// identity (the refresh-token family is used instead).
pub const CAPTURE_DEVICE_HEADER_BYTES_MAX: usize = 256;

/// Bytes of one configured claim or header name under `[capture]`.
pub const CAPTURE_CLAIM_NAME_BYTES_MAX: usize = 128;

/// Entries of `capture.user_claims`.
pub const CAPTURE_USER_CLAIMS_MAX: usize = 8;

/// Values of one list claim (`amr`, groups, roles) kept in a snapshot. A longer list skips the
/// capture (`too_many_values`): a truncated group list could let a policy that targets a missing
/// group pass in an outage.
pub const CAPTURE_CLAIM_VALUES_MAX: usize = 1024;

/// Bytes of one string taken from a claim (user, tenant, `acr`, a group, a platform).
pub const CAPTURE_CLAIM_VALUE_BYTES_MAX: usize = 1024;

const _: () = {
    assert!(CAPTURE_QUEUE_LEN.is_coherent());
    assert!(CAPTURE_SESSION_WINDOW_SECS.is_coherent());
    assert!(CAPTURE_BATCH_JOBS_MAX >= 1);
    assert!(CAPTURE_SUCCESSOR_HOPS_MAX >= 1);
    // Identifiers taken from claims must fit the store's identifier bound.
    assert!(CAPTURE_CLAIM_VALUE_BYTES_MAX <= STORE_IDENTIFIER_BYTES_MAX);
    // "hdr:" + the header value is a device identifier.
    assert!(CAPTURE_DEVICE_HEADER_BYTES_MAX + 4 <= STORE_IDENTIFIER_BYTES_MAX);
    // A response holding three JWTs of the largest size we verify must fit.
    assert!(3 * JWS_COMPACT_BYTES_MAX < CAPTURE_RESPONSE_BYTES_MAX);
    assert!(CAPTURE_RESPONSE_BYTES_MAX <= UPSTREAM_BUFFERED_BODY_BYTES_MAX);
};

// ---------------------------------------------------------------------------------------------
// Conditional Access wiring (issue 6): request facts, the policy file, the session window.
// ---------------------------------------------------------------------------------------------

/// Bytes of a User-Agent scanned for a platform token. Real agents put the platform in their
/// first 200 bytes; scanning a bounded prefix keeps a 16 KiB header from costing 16 KiB of work.
pub const USER_AGENT_BYTES_SCANNED: usize = 512;

/// Addresses read from the client-IP header of a trusted proxy. Real chains are a few hops;
/// more is refused (the request cannot be placed).
pub const CLIENT_IP_HEADER_ENTRIES_MAX: usize = 32;

/// CIDRs in `[policy] trusted_proxies`.
pub const TRUSTED_PROXIES_MAX: usize = 256;

/// Milliseconds between two looks at the policy file (mtime, size, then content hash) by the
/// hot-reload watcher, `[policy] reload_poll_ms`. 0 disables the watcher (SIGHUP and the
/// admin API still reload).
pub const POLICY_RELOAD_POLL_MS: Bound = Bound {
    min: 0,
    max: 3_600_000,
    default: 2_000,
};

/// Seconds a session snapshot may be served after it was recorded (DESIGN §2 rule 1: the
/// window, 3 days by default). Eligibility refuses an older snapshot even if the store still
/// holds it.
pub const SESSION_WINDOW_SECS: Bound = Bound {
    min: 60,
    max: 30 * 86_400,
    default: 3 * 86_400,
};

const _: () = {
    assert!(POLICY_RELOAD_POLL_MS.is_coherent());
    assert!(SESSION_WINDOW_SECS.is_coherent());
    assert!(TRUSTED_PROXIES_MAX <= POLICY_LIST_ENTRIES_MAX);
};

/// Bytes of a `POST /admin/revocations` body (one event: ids are at most 256 + 512 bytes).
pub const ADMIN_REVOCATION_BODY_BYTES_MAX: usize = 4 * 1024;

/// Seconds an admin revocation's `time` may lie ahead of now: an event in the future would
/// deny fresh sign-ins until then, so only clock skew is allowed.
pub const ADMIN_REVOCATION_FUTURE_SECS_MAX: i64 = 300;

const _: () = {
    assert!(
        REVOCATION_EVENT_ID_BYTES_MAX + REVOCATION_SUBJECT_ID_BYTES_MAX + 256
            <= ADMIN_REVOCATION_BODY_BYTES_MAX
    );
};

// ---------------------------------------------------------------------------------------------
// Shared Signals receiver (issue 6): Security Event Tokens pushed per RFC 8935.
// ---------------------------------------------------------------------------------------------

/// Bytes of one pushed SET (the request body). CAEP and RISC SETs are well under 2 KiB; a
/// transmitter that packs many events is still far below this.
pub const SSF_SET_BYTES_MAX: usize = 16 * 1024;

/// Seconds a SET's `iat` may lie in the past or the future, `[ssf] iat_window_secs`. A SET
/// older than this is refused, so the `jti` replay cache only needs to remember this long.
pub const SSF_IAT_WINDOW_SECS: Bound = Bound {
    min: 30,
    max: 86_400,
    default: 600,
};

/// `jti`s remembered for replay detection, `[ssf] replay_cache_entries`. Full: the oldest is
/// forgotten first. That is safe because the events a SET yields are idempotent by id
/// (`<jti>/<n>`): a redelivery past the cache inserts nothing new.
pub const SSF_REPLAY_ENTRIES: Bound = Bound {
    min: 16,
    max: 10_000_000,
    default: 100_000,
};

/// Events in one SET's `events` claim. RFC 8417 SETs carry one event (plus extensions).
pub const SSF_EVENTS_PER_SET_MAX: usize = 8;

/// Bytes of a SET `jti`. Each event a SET yields gets the id `<jti>/<n>`.
pub const SSF_JTI_BYTES_MAX: usize = 200;

/// Bytes of a SET string member other than `jti` (`iss`, subject identifiers, event fields).
pub const SSF_STRING_BYTES_MAX: usize = 512;

const _: () = {
    assert!(SSF_IAT_WINDOW_SECS.is_coherent());
    assert!(SSF_REPLAY_ENTRIES.is_coherent());
    // A SET body is a JWS compact token: the JWS bound must admit it.
    assert!(SSF_SET_BYTES_MAX <= JWS_COMPACT_BYTES_MAX);
    // `<jti>/<n>` becomes a revocation event id; a subject identifier becomes its subject.
    assert!(SSF_JTI_BYTES_MAX + 1 + 3 <= REVOCATION_EVENT_ID_BYTES_MAX);
    assert!(SSF_STRING_BYTES_MAX <= REVOCATION_SUBJECT_ID_BYTES_MAX);
    assert!(SSF_EVENTS_PER_SET_MAX * 4 < 1000);
};

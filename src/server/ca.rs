//! Conditional Access and revocation in the running server (DESIGN §2, §5, §6): the policy
//! manager, the revocation filter with its durable events, and the outage path's checks.
//!
//! Writes (admin API, Shared Signals, replay at start) go through [`Revocations::record`]:
//! durable in the store's WAL first, then inserted under a mutex and published as a new
//! immutable [`FilterSnapshot`] through an `ArcSwap`. Readers (every outage request) load the
//! snapshot without a lock; an acknowledged event is visible to all workers at once.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::eligibility::{
    self, Eligibility, EligibilityConfig, Interaction, RequestFacts, SnapshotFacts,
};
use crate::gateway::outage::{CheckFacts, HookRefusal, OutageChecks};
use crate::policy::{ClientAppType, DevicePlatform, PolicyManager, RiskLevel};
use crate::revocation::{
    FilterSnapshot, Inserted, RevocationError, RevocationEvent, RevocationSet,
};
use crate::store::{DeviceCompliance, RevocationRecord, Store, StoreError};

/// Why a revocation event could not be recorded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RecordError {
    /// The event is invalid or conflicts with a recorded one.
    #[error(transparent)]
    Invalid(#[from] RevocationError),
    /// The store could not make it durable (the event is not acknowledged).
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// The revocation events: durable in the store, answered from an immutable filter snapshot.
pub(crate) struct Revocations {
    set: Mutex<RevocationSet>,
    filter: ArcSwap<FilterSnapshot>,
    /// How long an event matters: snapshots older than this are not served anyway.
    window_secs: i64,
}

impl Revocations {
    /// Replays the store's live events into a new filter.
    pub(crate) fn replay(
        store: &Store,
        window_secs: i64,
        now_secs: i64,
    ) -> Result<Self, RevocationError> {
        let events_max = crate::limits::REVOCATION_EVENTS.default;
        let mut set = RevocationSet::new(events_max)?;
        set.expire_before(now_secs.saturating_sub(window_secs));
        let mut replayed = 0usize;
        for rec in store.revocations_live(now_secs) {
            let Some(event) = RevocationEvent::from_codes(
                rec.id.clone(),
                (rec.kind, rec.subject_kind, rec.source),
                rec.subject.clone(),
                rec.time_secs,
            ) else {
                tracing::error!(id = %rec.id, "stored revocation event has unknown codes; ignored");
                continue;
            };
            match set.insert(event) {
                Ok(_) => replayed += 1,
                Err(e) => {
                    tracing::error!(id = %rec.id, error = %e, "stored revocation event refused")
                }
            }
        }
        if replayed > 0 {
            tracing::info!(events = replayed, "revocation events replayed");
        }
        let filter = ArcSwap::new(set.snapshot());
        Ok(Self {
            set: Mutex::new(set),
            filter,
            window_secs,
        })
    }

    /// The current filter (lock-free), as a guard that touches no reference count in the
    /// common case. Hold it for one request.
    pub(crate) fn filter(&self) -> arc_swap::Guard<Arc<FilterSnapshot>> {
        self.filter.load()
    }

    /// Records `event`: checked against the set, made durable, then published. `Duplicate`
    /// for an identical event already recorded (idempotent by id).
    pub(crate) async fn record(
        &self,
        store: &Store,
        event: RevocationEvent,
        now_secs: i64,
    ) -> Result<Inserted, RecordError> {
        // Refuse conflicts and duplicates before writing anything.
        if let Some(existing) = self.lock_set().get(&event.id) {
            return if *existing == event {
                Ok(Inserted::Duplicate)
            } else {
                Err(RevocationError::IdConflict { id: event.id }.into())
            };
        }
        let (kind, subject_kind, source) = event.codes();
        store
            .put_revocation(RevocationRecord {
                id: event.id.clone(),
                kind,
                subject_kind,
                subject: event.subject.id().to_string(),
                time_secs: event.time_secs,
                source,
                recorded_at_secs: now_secs,
                expires_at_secs: event
                    .time_secs
                    .max(now_secs)
                    .saturating_add(self.window_secs),
            })
            .await?;
        let mut set = self.lock_set();
        set.expire_before(now_secs.saturating_sub(self.window_secs));
        let inserted = set.insert(event)?;
        self.filter.store(set.snapshot());
        Ok(inserted)
    }

    /// Every recorded event (admin listing).
    pub(crate) fn events(&self) -> Vec<RevocationEvent> {
        self.lock_set().events().cloned().collect()
    }

    fn lock_set(&self) -> std::sync::MutexGuard<'_, RevocationSet> {
        // A panic while holding the set leaves it consistent (insert is all-or-nothing);
        // recover the guard rather than refuse every revocation from then on.
        self.set
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The outage path's rules 1–5 (DESIGN §2) through [`eligibility::decide`].
pub(crate) struct CaChecks {
    pub(crate) policies: Arc<PolicyManager>,
    pub(crate) revocations: Arc<Revocations>,
    pub(crate) config: EligibilityConfig,
}

impl OutageChecks for CaChecks {
    fn check(&self, facts: &CheckFacts<'_>) -> Result<(), HookRefusal> {
        let session = facts.session;
        let artifact = facts.artifact;
        let request = RequestFacts {
            platform: facts.user_agent.and_then(DevicePlatform::from_user_agent),
            client_ip: facts.client_ip,
            client_app: ClientAppType::MobileAppsAndDesktopClients,
            interaction: Interaction::default(),
        };
        let auth_time = session.auth_time_secs.to_native();
        let family = artifact.family.as_str();
        // The revocation check starts at the older of the snapshot's recording and the
        // presented credential's issue. A later sign-in on the same device (another
        // refresh-token family) refreshes the one snapshot; it must not revive a token the
        // primary issued before a revocation event (DESIGN §6: the new sign-in's tokens return,
        // not the old ones). Rule 1 sees the same time: an older time can only fall outside
        // the window, never into the future, so it narrows what is served.
        let recorded_at = session.recorded_at_secs.to_native();
        let issued_at = artifact.issued_at_secs.to_native();
        let since = if issued_at > 0 {
            recorded_at.min(issued_at)
        } else {
            recorded_at
        };
        let snapshot = SnapshotFacts {
            user: session.user.as_str(),
            device: Some(revocation_device(session.device.as_str())).filter(|d| !d.is_empty()),
            session: Some(family).filter(|f| !f.is_empty()),
            app: session.app.as_str(),
            home_tenant: session.home_tenant,
            auth_time_secs: (auth_time > 0).then_some(auth_time),
            recorded_at_secs: since,
            expires_at_secs: session.expires_at_secs.to_native(),
            groups: &session.groups,
            roles: &session.roles,
            amr: &session.amr,
            sign_in_risk: risk(session.sign_in_risk),
            user_risk: risk(session.user_risk),
            device_compliant: session.device_compliance
                == crate::store::format::compliance_code(DeviceCompliance::Compliant),
            device_domain_joined: false,
        };
        let policies = self.policies.current_guard();
        let filter = self.revocations.filter();
        match eligibility::decide(
            &request,
            Some(&snapshot),
            &policies.value,
            &filter,
            &self.config,
            facts.now_secs,
        ) {
            Eligibility::Serve(eligible) => {
                for hit in eligible.report_only() {
                    tracing::info!(?hit, "report-only policy would have refused");
                }
                Ok(())
            }
            Eligibility::Refuse(refusal) => Err(HookRefusal {
                label: refusal.label(),
                error: refusal.oauth_error(),
                rule: refusal.rule(),
                detail: match &refusal {
                    eligibility::EligibilityRefusal::Policy { policy_id, .. } => {
                        Some(format!("policy {policy_id}"))
                    }
                    eligibility::EligibilityRefusal::Revoked { event_id, .. } => {
                        Some(format!("revocation event {event_id}"))
                    }
                    _ => None,
                },
            }),
        }
    }
}

/// The device as revocation events name it. A device identity from the configured device
/// header is stored with its source prefix (`hdr:`), but operators and transmitters name the
/// device by the header's value, the client's own device id: without the prefix. Identities
/// from a DPoP key or the refresh-token family keep theirs (no one outside names those).
fn revocation_device(stored: &str) -> &str {
    stored
        .strip_prefix(crate::gateway::capture::DEVICE_PREFIX_HEADER)
        .unwrap_or(stored)
}

/// The store's risk code as the policy engine's level; unknown stays unknown.
fn risk(code: u8) -> Option<RiskLevel> {
    match crate::store::format::risk_from_code(code) {
        crate::store::RiskLevel::Unknown => None,
        crate::store::RiskLevel::None => Some(RiskLevel::None),
        crate::store::RiskLevel::Low => Some(RiskLevel::Low),
        crate::store::RiskLevel::Medium => Some(RiskLevel::Medium),
        crate::store::RiskLevel::High => Some(RiskLevel::High),
    }
}

/// The client's address as Conditional Access sees it: the socket peer, or the configured
/// header when the peer is a trusted proxy. `None` when a trusted proxy's header is malformed.
pub(crate) fn client_ip(
    peer: IpAddr,
    headers: &hyper::HeaderMap,
    cfg: &crate::policy::ClientIpConfig,
) -> Option<IpAddr> {
    let values: Vec<&str> = match cfg.header.as_deref() {
        Some(name) => headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect(),
        None => Vec::new(),
    };
    crate::policy::client_ip(peer, values, cfg).ok()
}

#[cfg(test)]
mod tests {
    use super::revocation_device;

    #[test]
    fn a_header_device_is_named_by_its_value_and_other_identities_keep_their_prefix() {
        assert_eq!(revocation_device("hdr:phone-7"), "phone-7");
        assert_eq!(revocation_device("jkt:0ZcOCORZNYy"), "jkt:0ZcOCORZNYy");
        assert_eq!(revocation_device("family:f-1"), "family:f-1");
        assert_eq!(revocation_device(""), "");
    }
}

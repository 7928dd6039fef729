//! The Lease protocol, pure: who may take a lease as it stands, and the lease as its holder
//! writes it when taking, renewing or releasing it.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;

use super::LeaseSettings;

/// What a candidate may do with the lease as it stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds it (never held, or released): take it.
    Free,
    /// We hold it already (e.g. restarted under the same identity): renew it.
    Mine,
    /// The holder stopped renewing and its lease ran out: take it over.
    Expired { holder: String },
    /// Another holder's lease is still valid until `expires`: wait.
    HeldByOther { holder: String, expires: Timestamp },
}

/// Decides whether `identity` may take the lease whose spec is `spec` at `now`.
/// `default_duration` stands in for a missing or nonsensical `leaseDurationSeconds`.
pub fn decide(
    spec: Option<&LeaseSpec>,
    identity: &str,
    now: Timestamp,
    default_duration: Duration,
) -> Decision {
    let Some(spec) = spec else {
        return Decision::Free;
    };
    let holder = match spec.holder_identity.as_deref() {
        None | Some("") => return Decision::Free,
        Some(h) if h == identity => return Decision::Mine,
        Some(h) => h.to_owned(),
    };
    // A live holder always writes renewTime; without it (or at least acquireTime) nothing shows
    // the holder is alive.
    let Some(MicroTime(last)) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return Decision::Expired { holder };
    };
    let duration = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .filter(|&s| s > 0)
        .map_or(default_duration, Duration::from_secs);
    let expires = last.checked_add(duration).unwrap_or(Timestamp::MAX);
    if now >= expires {
        Decision::Expired { holder }
    } else {
        Decision::HeldByOther { holder, expires }
    }
}

/// The lease as `identity` writes it when taking or renewing `current` (None: creating it) at
/// `now`.
pub(super) fn claim(
    current: Option<&Lease>,
    settings: &LeaseSettings,
    duration_secs: i32,
    now: Timestamp,
) -> Lease {
    let mut lease = current.cloned().unwrap_or_else(|| Lease {
        metadata: ObjectMeta {
            name: Some(settings.name.clone()),
            namespace: Some(settings.namespace.clone()),
            ..ObjectMeta::default()
        },
        spec: None,
    });
    let old = lease.spec.take().unwrap_or_default();
    let renewing = old.holder_identity.as_deref() == Some(settings.identity.as_str());
    let spec = if renewing {
        LeaseSpec {
            acquire_time: old.acquire_time.clone().or(Some(MicroTime(now))),
            lease_transitions: old.lease_transitions.or(Some(0)),
            ..old
        }
    } else {
        LeaseSpec {
            holder_identity: Some(settings.identity.clone()),
            acquire_time: Some(MicroTime(now)),
            // A lease we create has had no holder to transition from.
            lease_transitions: Some(if current.is_none() {
                0
            } else {
                old.lease_transitions.unwrap_or(0).saturating_add(1)
            }),
            ..old
        }
    };
    lease.spec = Some(LeaseSpec {
        renew_time: Some(MicroTime(now)),
        lease_duration_seconds: Some(duration_secs),
        ..spec
    });
    lease
}

/// The lease as written on release: nobody holds it, and even a candidate that ignores the empty
/// holder sees it expire within a second (client-go writes the same).
pub(super) fn released(mut lease: Lease, now: Timestamp) -> Lease {
    let old = lease.spec.take().unwrap_or_default();
    lease.spec = Some(LeaseSpec {
        holder_identity: None,
        acquire_time: Some(MicroTime(now)),
        renew_time: Some(MicroTime(now)),
        lease_duration_seconds: Some(1),
        ..old
    });
    lease
}

pub(super) fn holder(lease: &Lease) -> Option<&str> {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .filter(|h| !h.is_empty())
}

pub(super) fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: Duration = Duration::from_secs(15);

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).expect("valid timestamp")
    }

    fn spec(holder: Option<&str>, renewed: Option<i64>, duration: Option<i32>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            renew_time: renewed.map(|s| MicroTime(ts(s))),
            acquire_time: renewed.map(|s| MicroTime(ts(s - 100))),
            lease_duration_seconds: duration,
            lease_transitions: Some(3),
            ..LeaseSpec::default()
        }
    }

    fn settings() -> LeaseSettings {
        LeaseSettings {
            namespace: "vigil-system".into(),
            name: "vigil-operator".into(),
            identity: "me".into(),
            lease_duration: Duration::from_secs(15),
            renew_interval: Duration::from_secs(5),
            retry_interval: Duration::from_secs(2),
        }
    }

    #[test]
    fn free_when_no_spec_or_no_holder() {
        assert_eq!(decide(None, "me", ts(0), DEFAULT), Decision::Free);
        let s = spec(None, Some(0), Some(15));
        assert_eq!(decide(Some(&s), "me", ts(1), DEFAULT), Decision::Free);
        let s = spec(Some(""), Some(0), Some(15));
        assert_eq!(decide(Some(&s), "me", ts(1), DEFAULT), Decision::Free);
    }

    #[test]
    fn mine_even_when_expired() {
        let s = spec(Some("me"), Some(0), Some(15));
        assert_eq!(decide(Some(&s), "me", ts(1), DEFAULT), Decision::Mine);
        assert_eq!(decide(Some(&s), "me", ts(100), DEFAULT), Decision::Mine);
    }

    #[test]
    fn held_by_other_until_renew_time_plus_duration() {
        let s = spec(Some("other"), Some(0), Some(10));
        assert_eq!(
            decide(Some(&s), "me", ts(9), DEFAULT),
            Decision::HeldByOther {
                holder: "other".into(),
                expires: ts(10)
            }
        );
        let expired = Decision::Expired {
            holder: "other".into(),
        };
        assert_eq!(decide(Some(&s), "me", ts(10), DEFAULT), expired);
        assert_eq!(decide(Some(&s), "me", ts(500), DEFAULT), expired);
    }

    #[test]
    fn renew_time_ahead_of_our_clock_is_fresh() {
        let s = spec(Some("other"), Some(30), Some(10));
        assert!(matches!(
            decide(Some(&s), "me", ts(0), DEFAULT),
            Decision::HeldByOther { .. }
        ));
    }

    #[test]
    fn missing_or_bad_duration_uses_ours() {
        for duration in [None, Some(0), Some(-5)] {
            let s = spec(Some("other"), Some(0), duration);
            assert!(
                matches!(
                    decide(Some(&s), "me", ts(14), DEFAULT),
                    Decision::HeldByOther { .. }
                ),
                "{duration:?}"
            );
            assert!(
                matches!(
                    decide(Some(&s), "me", ts(15), DEFAULT),
                    Decision::Expired { .. }
                ),
                "{duration:?}"
            );
        }
    }

    #[test]
    fn missing_renew_time_falls_back_to_acquire_time_then_expired() {
        let mut s = spec(Some("other"), Some(0), Some(15));
        s.renew_time = None; // acquire_time is ts(-100)
        assert!(matches!(
            decide(Some(&s), "me", ts(-90), DEFAULT),
            Decision::HeldByOther { .. }
        ));
        assert!(matches!(
            decide(Some(&s), "me", ts(0), DEFAULT),
            Decision::Expired { .. }
        ));
        s.acquire_time = None;
        assert!(matches!(
            decide(Some(&s), "me", ts(-1000), DEFAULT),
            Decision::Expired { .. }
        ));
    }

    #[test]
    fn huge_duration_does_not_overflow() {
        let s = spec(Some("other"), Some(0), Some(i32::MAX));
        assert!(matches!(
            decide(Some(&s), "me", ts(1_000_000), DEFAULT),
            Decision::HeldByOther { .. }
        ));
    }

    fn lease_with(spec: LeaseSpec) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some("vigil-operator".into()),
                namespace: Some("vigil-system".into()),
                resource_version: Some("42".into()),
                ..ObjectMeta::default()
            },
            spec: Some(spec),
        }
    }

    #[test]
    fn claim_new_lease() {
        let lease = claim(None, &settings(), 15, ts(0));
        assert_eq!(lease.metadata.name.as_deref(), Some("vigil-operator"));
        assert_eq!(lease.metadata.resource_version, None);
        let s = lease.spec.expect("spec");
        assert_eq!(s.holder_identity.as_deref(), Some("me"));
        assert_eq!(s.acquire_time, Some(MicroTime(ts(0))));
        assert_eq!(s.renew_time, Some(MicroTime(ts(0))));
        assert_eq!(s.lease_duration_seconds, Some(15));
        assert_eq!(s.lease_transitions, Some(0));
    }

    #[test]
    fn claim_takeover_counts_a_transition_and_keeps_resource_version() {
        let current = lease_with(spec(Some("other"), Some(0), Some(10)));
        let lease = claim(Some(&current), &settings(), 15, ts(20));
        assert_eq!(lease.metadata.resource_version.as_deref(), Some("42"));
        let s = lease.spec.expect("spec");
        assert_eq!(s.holder_identity.as_deref(), Some("me"));
        assert_eq!(s.acquire_time, Some(MicroTime(ts(20))));
        assert_eq!(s.renew_time, Some(MicroTime(ts(20))));
        assert_eq!(s.lease_duration_seconds, Some(15));
        assert_eq!(s.lease_transitions, Some(4));
        // A released lease (no holder) taken again is a transition as well.
        let current = lease_with(spec(None, Some(0), Some(1)));
        let s = claim(Some(&current), &settings(), 15, ts(20))
            .spec
            .expect("spec");
        assert_eq!(s.lease_transitions, Some(4));
    }

    #[test]
    fn renewal_keeps_acquire_time_and_transitions() {
        let current = lease_with(spec(Some("me"), Some(0), Some(15)));
        let s = claim(Some(&current), &settings(), 15, ts(5))
            .spec
            .expect("spec");
        assert_eq!(s.holder_identity.as_deref(), Some("me"));
        assert_eq!(s.acquire_time, Some(MicroTime(ts(-100))));
        assert_eq!(s.renew_time, Some(MicroTime(ts(5))));
        assert_eq!(s.lease_transitions, Some(3));
    }

    #[test]
    fn release_clears_holder_and_keeps_transitions() {
        let current = lease_with(spec(Some("me"), Some(0), Some(15)));
        let lease = released(current, ts(7));
        assert_eq!(lease.metadata.resource_version.as_deref(), Some("42"));
        let s = lease.spec.expect("spec");
        assert_eq!(s.holder_identity, None);
        assert_eq!(s.renew_time, Some(MicroTime(ts(7))));
        assert_eq!(s.lease_duration_seconds, Some(1));
        assert_eq!(s.lease_transitions, Some(3));
        assert_eq!(decide(Some(&s), "other", ts(7), DEFAULT), Decision::Free);
    }

    #[test]
    fn settings_validation() {
        assert_eq!(settings().validate().ok(), Some(15));
        let mut s = settings();
        s.lease_duration = Duration::from_millis(1500);
        assert!(s.validate().is_err());
        let mut s = settings();
        s.renew_interval = Duration::from_secs(13);
        assert!(s.validate().is_err());
        let mut s = settings();
        s.retry_interval = Duration::ZERO;
        assert!(s.validate().is_err());
        let mut s = settings();
        s.identity.clear();
        assert!(s.validate().is_err());
    }
}

//! The requests that take, renew and release the lease, with optimistic concurrency.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::lease::{Decision, api_code, claim, decide, holder, released};
use super::{Error, Held, LeaseSettings};

pub(super) enum Attempt {
    Acquired(Box<Held>),
    Held {
        holder: String,
        expires: Timestamp,
    },
    /// Another candidate created or updated the lease between our read and our write.
    Raced,
}

pub(super) enum AttemptError {
    Fatal(Error),
    Transient(kube::Error),
}

pub(super) async fn try_acquire(
    api: &Api<Lease>,
    settings: &LeaseSettings,
    duration_secs: i32,
) -> Result<Attempt, AttemptError> {
    let forbidden = |verb, source| {
        AttemptError::Fatal(Error::Forbidden {
            verb,
            namespace: settings.namespace.clone(),
            name: settings.name.clone(),
            source: Box::new(source),
        })
    };
    let current = match api.get_opt(&settings.name).await {
        Ok(c) => c,
        Err(e) if matches!(api_code(&e), Some(401 | 403)) => return Err(forbidden("get", e)),
        Err(e) => return Err(AttemptError::Transient(e)),
    };
    let now = Timestamp::now();
    let sent = Instant::now();
    let Some(current) = current else {
        let lease = claim(None, settings, duration_secs, now);
        return match api.create(&PostParams::default(), &lease).await {
            Ok(lease) => Ok(Attempt::Acquired(Box::new(Held {
                lease,
                renewed_at: sent,
            }))),
            Err(e) => match api_code(&e) {
                Some(409) => Ok(Attempt::Raced),
                Some(401 | 403) => Err(forbidden("create", e)),
                Some(404) => Err(AttemptError::Fatal(Error::NamespaceMissing {
                    namespace: settings.namespace.clone(),
                    name: settings.name.clone(),
                    source: Box::new(e),
                })),
                _ => Err(AttemptError::Transient(e)),
            },
        };
    };
    match decide(
        current.spec.as_ref(),
        &settings.identity,
        now,
        settings.lease_duration,
    ) {
        Decision::HeldByOther { holder, expires } => return Ok(Attempt::Held { holder, expires }),
        Decision::Expired { holder } => {
            info!(lease = %settings.name, previous = %holder, "lease expired; taking it over")
        }
        Decision::Free | Decision::Mine => {}
    }
    // `current` carries its resourceVersion: if anyone wrote the lease since we read it, this
    // PUT fails with 409 and we read again.
    let lease = claim(Some(&current), settings, duration_secs, now);
    match api
        .replace(&settings.name, &PostParams::default(), &lease)
        .await
    {
        Ok(lease) => Ok(Attempt::Acquired(Box::new(Held {
            lease,
            renewed_at: sent,
        }))),
        Err(e) => match api_code(&e) {
            // 404: deleted since we read it; the next attempt creates it.
            Some(409 | 404) => Ok(Attempt::Raced),
            Some(401 | 403) => Err(forbidden("update", e)),
            _ => Err(AttemptError::Transient(e)),
        },
    }
}

enum RenewError {
    /// Someone else holds the lease, or it was deleted or released: why.
    Lost(String),
    /// Worth retrying until the deadline: what went wrong.
    Transient(String),
}

/// One renewal of the lease we hold; on a conflict (someone else wrote it) reads it again and
/// retries only if it is still ours.
async fn renew(
    api: &Api<Lease>,
    settings: &LeaseSettings,
    duration_secs: i32,
    ours: &Lease,
) -> Result<Lease, RenewError> {
    let mut current = ours.clone();
    for _ in 0..2 {
        let lease = claim(Some(&current), settings, duration_secs, Timestamp::now());
        match api
            .replace(&settings.name, &PostParams::default(), &lease)
            .await
        {
            Ok(lease) => return Ok(lease),
            Err(e) if api_code(&e) == Some(404) => {
                return Err(RenewError::Lost("the lease was deleted".into()));
            }
            Err(e) if api_code(&e) == Some(409) => {
                match api.get_opt(&settings.name).await {
                    Ok(None) => return Err(RenewError::Lost("the lease was deleted".into())),
                    Ok(Some(fresh)) => match holder(&fresh) {
                        // Still ours (someone touched labels or annotations): renew that version.
                        Some(h) if h == settings.identity => current = fresh,
                        Some(h) => {
                            return Err(RenewError::Lost(format!("the lease is now held by {h}")));
                        }
                        None => {
                            return Err(RenewError::Lost("someone else released the lease".into()));
                        }
                    },
                    Err(e) => return Err(RenewError::Transient(e.to_string())),
                }
            }
            Err(e) => return Err(RenewError::Transient(e.to_string())),
        }
    }
    Err(RenewError::Transient(
        "the lease kept changing under the renewal".into(),
    ))
}

/// Renews the lease every `renew_interval` until stopped (returns the lease for release) or lost
/// (returns None after flagging `lost`).
pub(super) async fn keep_renewing(
    api: Api<Lease>,
    settings: LeaseSettings,
    duration_secs: i32,
    mut held: Held,
    lost: watch::Sender<bool>,
    mut stop: oneshot::Receiver<()>,
) -> Option<Held> {
    let lose = |reason: &str| {
        warn!(lease = %settings.name, identity = %settings.identity, reason, "leadership lost");
        lost.send_replace(true);
    };
    let mut wait = settings.renew_interval;
    loop {
        // Give up one retry interval before the lease expires for others: that is the time the
        // caller has to stop acting before a standby can take over.
        let deadline = held.renewed_at + settings.lease_duration - settings.retry_interval;
        tokio::select! {
            // Stop sent (release) or the Leadership dropped.
            _ = &mut stop => return Some(held),
            () = tokio::time::sleep_until((Instant::now() + wait).min(deadline)) => {}
        }
        if Instant::now() >= deadline {
            lose("no renewal succeeded before the lease would expire");
            return None;
        }
        let sent = Instant::now();
        let attempt = tokio::select! {
            _ = &mut stop => return Some(held),
            r = tokio::time::timeout_at(deadline, renew(&api, &settings, duration_secs, &held.lease)) => r,
        };
        match attempt {
            Ok(Ok(lease)) => {
                debug!(lease = %settings.name, "renewed the lease");
                held = Held {
                    lease,
                    renewed_at: sent,
                };
                wait = settings.renew_interval;
            }
            Ok(Err(RenewError::Lost(reason))) => {
                lose(&reason);
                return None;
            }
            Ok(Err(RenewError::Transient(e))) => {
                let left = deadline.saturating_duration_since(Instant::now());
                warn!(
                    lease = %settings.name, error = %e, time_left = ?left,
                    "renewing the lease failed; retrying"
                );
                wait = settings.retry_interval;
            }
            Err(_) => {
                lose("the renewal did not complete before the lease would expire");
                return None;
            }
        }
    }
}

/// Writes the lease as released, unless someone else holds it by now.
pub(super) async fn give_up(api: &Api<Lease>, settings: &LeaseSettings, mut lease: Lease) {
    for _ in 0..3 {
        let release = released(lease.clone(), Timestamp::now());
        match api
            .replace(&settings.name, &PostParams::default(), &release)
            .await
        {
            Ok(_) => {
                info!(lease = %settings.name, "released the lease");
                return;
            }
            Err(e) if api_code(&e) == Some(409) => match api.get_opt(&settings.name).await {
                Ok(Some(fresh)) if holder(&fresh) == Some(settings.identity.as_str()) => {
                    lease = fresh
                }
                Ok(_) => {
                    info!(lease = %settings.name, "the lease is no longer ours; nothing to release");
                    return;
                }
                Err(e) => {
                    warn!(lease = %settings.name, error = %e, "reading the lease to release it failed; it expires on its own");
                    return;
                }
            },
            Err(e) => {
                warn!(lease = %settings.name, error = %e, "releasing the lease failed; it expires on its own");
                return;
            }
        }
    }
    warn!(lease = %settings.name, "the lease kept changing while releasing it; it expires on its own");
}

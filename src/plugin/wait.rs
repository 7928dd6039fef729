//! `--wait`: one loop for every verb. It reads the replication (and, as the verb asks, its
//! pods and Events) every half second, asks the verb's check where the request stands, prints
//! each new step on stderr, and ends on the outcome, the operator's refusal, or the timeout.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Api;
use kube::api::ListParams;

use super::{Error, Session};
use crate::api::RedisReplication;

const POLL: Duration = Duration::from_millis(500);

/// The condition in which the operator says it cannot carry out an annotation (reason
/// `InvalidAnnotation`, `HibernationRefused`, ...).
pub const REQUESTS_ACCEPTED: &str = "RequestsAccepted";

/// What one round of the wait read.
pub struct Observed {
    pub rr: RedisReplication,
    /// The instance pods, when the verb watches them.
    pub pods: Vec<Pod>,
    /// The Events regarding the replication, when the verb watches them.
    pub events: Vec<Event>,
}

/// Where a request stands.
pub enum Check {
    /// The outcome holds; what to print.
    Done(String),
    /// Not yet; one line on what it waits for (printed when it changes).
    Pending(String),
    Failed(Error),
}

/// What a wait reads besides the replication.
#[derive(Default)]
pub struct Watch {
    pub pods: bool,
    pub events: bool,
    /// Fail on a refusal in `RequestsAccepted` other than this one (seen before the request).
    pub accepted: Option<Accepted>,
}

/// `RequestsAccepted` as it was before the request, so that an older refusal (of another
/// annotation, since fixed) is not taken for an answer to this one.
pub struct Accepted(Option<Condition>);

impl Accepted {
    pub fn before(rr: &RedisReplication) -> Self {
        Self(requests_accepted(rr).cloned())
    }

    /// The operator's refusal, if it refused anything since.
    pub fn refusal(&self, rr: &RedisReplication) -> Option<Error> {
        let now = requests_accepted(rr).filter(|c| c.status == "False")?;
        let same = self.0.as_ref().is_some_and(|before| {
            before.status == now.status
                && before.message == now.message
                && before.last_transition_time == now.last_transition_time
        });
        (!same).then(|| Error::NotAccepted {
            reason: now.reason.clone(),
            message: now.message.clone(),
        })
    }
}

fn requests_accepted(rr: &RedisReplication) -> Option<&Condition> {
    rr.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == REQUESTS_ACCEPTED)
}

/// Progress lines on stderr, stamped with the time since the wait began.
pub struct Log {
    start: Instant,
}

impl Log {
    pub fn line(&self, message: &str) {
        eprintln!("{:>5.1}s  {message}", self.start.elapsed().as_secs_f64());
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

/// Waits until `check` says the request of `what` is done, at most `timeout`.
pub async fn until(
    session: &Session,
    name: &str,
    what: &str,
    timeout: Duration,
    watch: Watch,
    mut check: impl FnMut(&Observed, &Log) -> Check,
) -> Result<(), Error> {
    let log = Log {
        start: Instant::now(),
    };
    let mut last_step = String::new();
    loop {
        let observed = Observed {
            rr: session.replication(name).await?,
            pods: match watch.pods {
                true => super::request::pods(session, name).await?,
                false => Vec::new(),
            },
            events: match watch.events {
                true => events(session, name).await?,
                false => Vec::new(),
            },
        };
        if let Some(refused) = watch
            .accepted
            .as_ref()
            .and_then(|a| a.refusal(&observed.rr))
        {
            return Err(refused);
        }
        match check(&observed, &log) {
            Check::Done(message) => {
                log.line(&message);
                return Ok(());
            }
            Check::Failed(e) => return Err(e),
            Check::Pending(step) if step != last_step => {
                log.line(&step);
                last_step = step;
            }
            Check::Pending(_) => {}
        }
        if log.elapsed() > timeout {
            return Err(Error::Timeout {
                seconds: timeout.as_secs(),
                what: format!("{what} (last: {last_step})"),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The Events regarding the replication.
pub async fn events(session: &Session, name: &str) -> Result<Vec<Event>, Error> {
    let api: Api<Event> = Api::namespaced(session.client.clone(), &session.namespace);
    let lp = ListParams::default().fields(&format!("regarding.name={name}"));
    let list = api
        .list(&lp)
        .await
        .map_err(|e| Error::api(format!("listing the Events of {name}"), e))?;
    Ok(list
        .items
        .into_iter()
        .filter(|e| {
            e.regarding
                .as_ref()
                .is_some_and(|r| r.kind.as_deref() == Some("RedisReplication"))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::request::fixtures::{replication, settled};
    use serde_json::json;

    fn with_accepted(status: &str, message: &str, time: &str) -> RedisReplication {
        let mut s = settled();
        s["conditions"] = json!([{"type": REQUESTS_ACCEPTED, "status": status,
            "reason": "HibernationRefused", "message": message, "lastTransitionTime": time}]);
        replication(json!({"instances": 3}), json!({}), s)
    }

    #[test]
    fn only_a_new_refusal_ends_a_wait() {
        let none = replication(json!({"instances": 3}), json!({}), settled());
        let refused = with_accepted("False", "no storage", "2025-01-02T03:04:05Z");
        let e = Accepted::before(&none)
            .refusal(&refused)
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("the operator did not carry out the request (HibernationRefused): no storage")
        );
        // The same refusal as before the request is not its answer; a changed one is.
        assert!(Accepted::before(&refused).refusal(&refused).is_none());
        let later = with_accepted("False", "other", "2025-01-02T03:05:05Z");
        assert!(Accepted::before(&refused).refusal(&later).is_some());
        let fine = with_accepted("True", "accepted", "2025-01-02T03:05:05Z");
        assert!(Accepted::before(&none).refusal(&fine).is_none());
    }
}

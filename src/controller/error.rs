//! What can go wrong in a reconcile, with the context a user can act on.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Kube {
        context: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Redis(#[from] crate::redis::Error),
    #[error("Secret {secret} or its key {key} is missing: create it or fix {field}")]
    MissingSecret {
        secret: String,
        key: String,
        /// The spec field naming the Secret.
        field: &'static str,
    },
    #[error("Secret {secret} cannot be used: {problem}")]
    InvalidSecret { secret: String, problem: String },
    #[error("status of {0} changed while planning; replanning from the newer state")]
    StatusConflict(String),
    #[error("instance {0} disappeared while acting on it")]
    InstanceGone(String),
    #[error(
        "switchover to {target} ran out of time: it held offset {offset} (-1: not following the \
         master) of the master's {wanted} while writes were paused"
    )]
    SwitchoverOutOfTime {
        target: String,
        offset: i64,
        wanted: i64,
    },
    #[error("{0} did not report the master role after REPLICAOF NO ONE")]
    PromotionNotVerified(String),
    #[error("RedisReplication has no namespace")]
    NoNamespace,
}

impl Error {
    pub(super) fn kube(context: impl Into<String>, source: kube::Error) -> Self {
        Self::Kube {
            context: context.into(),
            source,
        }
    }
}

/// The condition reason of an unusable Secret (password or TLS).
pub(super) fn secret_problem(error: &Error) -> Option<(&'static str, String)> {
    match error {
        Error::MissingSecret { .. } => Some(("SecretMissing", error.to_string())),
        Error::InvalidSecret { .. } => Some(("SecretInvalid", error.to_string())),
        _ => None,
    }
}

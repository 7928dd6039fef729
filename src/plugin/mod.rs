//! `kubectl vigil`: the operator's day-2 verbs as a kubectl plugin (DESIGN §13). The binary
//! (`src/bin/kubectl-vigil.rs`) parses the command line (`cli`) and runs one verb; each verb has
//! its own file. Everything here talks to the apiserver with the user's kubeconfig, as kubectl
//! does, and only reads or annotates what the operator already understands.

pub mod backup;
pub mod cli;
pub mod fence;
pub mod hibernate;
pub mod report;
pub mod request;
pub mod restart;
pub mod status;
pub mod switchover;
pub mod wait;

use std::path::PathBuf;

use kube::config::{InferConfigError, KubeConfigOptions, Kubeconfig, KubeconfigError};
use kube::{Api, Client, Config};

use crate::api::RedisReplication;

/// What a verb can fail with; each message says what to do next where it can.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the kubeconfig: {0}")]
    Kubeconfig(#[from] KubeconfigError),
    #[error("no cluster configuration found (kubeconfig or in-cluster): {0}")]
    Infer(#[from] InferConfigError),
    #[error("building the client: {0}")]
    Client(#[source] kube::Error),
    #[error("redisreplication \"{name}\" not found in namespace \"{namespace}\"")]
    NotFound { namespace: String, name: String },
    #[error("pod \"{pod}\" is not an instance of redisreplication \"{replication}\" ({known})")]
    NoSuchPod {
        pod: String,
        replication: String,
        known: String,
    },
    /// The apiserver refused or failed a request.
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    /// The request cannot be made now (a change in progress, nothing to switch to, ...).
    #[error("{0}")]
    Refused(String),
    /// The operator answered the request with a rejection.
    #[error("switchover to {target} rejected by the operator: {message}")]
    Rejected { target: String, message: String },
    /// The operator said in `RequestsAccepted` that it cannot carry out an annotation.
    #[error("the operator did not carry out the request ({reason}): {message}")]
    NotAccepted { reason: String, message: String },
    #[error("timed out after {seconds}s waiting for {what}")]
    Timeout { seconds: u64, what: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("encoding {what}: {message}")]
    Encode { what: String, message: String },
    #[error("invalid duration {0:?}: expected a number with ms, s, m or h (e.g. 90s, 2m)")]
    Duration(String),
}

impl Error {
    pub(crate) fn api(what: impl Into<String>, source: kube::Error) -> Self {
        Self::Api {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn encode(what: impl Into<String>, e: impl std::fmt::Display) -> Self {
        Self::Encode {
            what: what.into(),
            message: e.to_string(),
        }
    }
}

/// How to reach the cluster, as kubectl's flags of the same names say.
#[derive(Clone, Debug, Default)]
pub struct Connect {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub namespace: Option<String>,
}

/// A client and the namespace to work in (the flag, else the context's, else `default`).
pub struct Session {
    pub client: Client,
    pub namespace: String,
}

impl Connect {
    pub async fn session(&self) -> Result<Session, Error> {
        let options = KubeConfigOptions {
            context: self.context.clone(),
            ..KubeConfigOptions::default()
        };
        let config = match (&self.kubeconfig, &self.context) {
            (Some(path), _) => {
                Config::from_custom_kubeconfig(Kubeconfig::read_from(path)?, &options).await?
            }
            (None, Some(_)) => Config::from_kubeconfig(&options).await?,
            // KUBECONFIG, ~/.kube/config, or in-cluster, as kubectl.
            (None, None) => Config::infer().await?,
        };
        let namespace = self
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config).map_err(Error::Client)?;
        Ok(Session { client, namespace })
    }
}

impl Session {
    pub fn replications(&self) -> Api<RedisReplication> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The replication, or `NotFound` naming it and the namespace.
    pub async fn replication(&self, name: &str) -> Result<RedisReplication, Error> {
        match self.replications().get_opt(name).await {
            Ok(Some(rr)) => Ok(rr),
            Ok(None) => Err(Error::NotFound {
                namespace: self.namespace.clone(),
                name: name.to_string(),
            }),
            Err(e) => Err(Error::api(
                format!("reading redisreplication {}/{name}", self.namespace),
                e,
            )),
        }
    }
}

/// Output format of `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
    Yaml,
}

/// `90s`, `2m`, `500ms`, `1h`, or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, Error> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number.parse().map_err(|_| Error::Duration(s.into()))?;
    let millis = match unit {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => None,
    };
    millis
        .map(std::time::Duration::from_millis)
        .ok_or_else(|| Error::Duration(s.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations_parse_as_kubectl_writes_them() {
        assert_eq!(parse_duration("90s").ok(), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("2m").ok(), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_duration("500ms").ok(),
            Some(Duration::from_millis(500))
        );
        assert_eq!(parse_duration("1h").ok(), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("30").ok(), Some(Duration::from_secs(30)));
        for bad in ["", "s", "1d", "-5s", "1.5s", "5 minutes"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}

//! The agent's probe server. Liveness: Redis answers. Readiness: a master is writable; a replica
//! is linked and not in a full sync; a fenced instance is not ready.

use std::path::PathBuf;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::redis::{InstanceClient, ReplicationInfo, Role};

const PROBE_TIMEOUT: Duration = Duration::from_millis(800);

#[derive(Clone)]
pub struct Health {
    /// Redis's unix socket.
    socket: PathBuf,
    password: Option<String>,
}

impl Health {
    pub fn new(socket: PathBuf, password: Option<String>) -> Self {
        Self { socket, password }
    }

    async fn client(&self) -> Result<InstanceClient, crate::redis::Error> {
        InstanceClient::connect_local(&self.socket, self.password.as_deref(), PROBE_TIMEOUT).await
    }
}

pub async fn serve(listener: tokio::net::TcpListener, health: Health) {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(health);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "probe server stopped");
    }
}

async fn healthz(State(health): State<Health>) -> (StatusCode, String) {
    let result = async {
        let mut client = health.client().await?;
        client.ping().await
    }
    .await;
    liveness(result.map_err(|e| e.to_string()))
}

async fn readyz(State(health): State<Health>) -> (StatusCode, String) {
    let result = async {
        let mut client = health.client().await?;
        client.replication_info().await
    }
    .await;
    match result {
        Ok(info) => readiness(&info),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// Pure: alive when Redis answers PING, or is busy loading its dataset.
pub fn liveness(ping: Result<(), String>) -> (StatusCode, String) {
    match ping {
        Ok(()) => (StatusCode::OK, "ok".into()),
        Err(e) if e.contains("LOADING") => (StatusCode::OK, "loading".into()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

/// Pure: whether an instance in this replication state should receive traffic.
pub fn readiness(info: &ReplicationInfo) -> (StatusCode, String) {
    match &info.role {
        Role::Master => (StatusCode::OK, "master".into()),
        Role::Replica { .. } if info.is_fenced() => (
            StatusCode::SERVICE_UNAVAILABLE,
            "fenced: waiting for the operator to decide the role".into(),
        ),
        Role::Replica {
            master,
            link_up: false,
            ..
        } => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("replica of {master}: link down"),
        ),
        Role::Replica {
            master,
            sync_in_progress: true,
            ..
        } => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("replica of {master}: full sync in progress"),
        ),
        Role::Replica { master, .. } => (StatusCode::OK, format!("replica of {master}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::{Address, FENCE_HOST, FENCE_PORT};

    fn replica(host: &str, port: u16, link_up: bool, syncing: bool) -> ReplicationInfo {
        let role = Role::Replica {
            master: Address::new(host, port),
            link_up,
            sync_in_progress: syncing,
            link_down_seconds: None,
        };
        ReplicationInfo::fixture(role, 0)
    }

    #[test]
    fn only_linked_synced_replicas_are_ready() {
        assert_eq!(
            readiness(&replica("10.0.0.1", 6379, true, false)).0,
            StatusCode::OK
        );
        assert_eq!(
            readiness(&replica("10.0.0.1", 6379, false, false)).0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            readiness(&replica("10.0.0.1", 6379, true, true)).0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn fenced_is_not_ready_but_master_is() {
        let fenced = replica(FENCE_HOST, FENCE_PORT, false, false);
        assert!(readiness(&fenced).1.contains("fenced"));
        let master = ReplicationInfo {
            role: Role::Master,
            ..fenced
        };
        assert_eq!(readiness(&master).0, StatusCode::OK);
    }

    #[test]
    fn loading_is_alive() {
        assert_eq!(
            liveness(Err("LOADING Redis is loading".into())).0,
            StatusCode::OK
        );
        assert_eq!(
            liveness(Err("connection refused".into())).0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(liveness(Ok(())).0, StatusCode::OK);
    }
}

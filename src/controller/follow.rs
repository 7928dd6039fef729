//! `spec.replicaOf` on the operator's side: where the source master is this round (its address,
//! or what its Sentinel names), the source's password, and what the status says about the link.

use std::time::Duration;

use super::plan::{ObservedInstance, Source};
use super::{Context, secret_bytes};
use ::redis::IntoConnectionInfo;

use crate::api::{LinkStatus, RedisReplication, ReplicaOfSpec, ReplicaOfStatus, SecretKeySelector};
use crate::redis::{Address, Credentials, InstanceClient, ReplicationInfo};

/// A set that follows an external master, as resolved this round.
pub struct Following {
    pub source: Source,
    /// The source's password, when it is not the set's own.
    pub password: Option<String>,
    /// The source's replication offset, when it answered.
    pub source_offset: Option<i64>,
}

/// Resolves `spec.replicaOf`, or `None` when the set follows nothing. A source that cannot be
/// located, or whose password Secret cannot be read, is `Source::Unresolved` with the reason
/// (for the status): the designated master keeps following where it did.
pub async fn resolve(
    ctx: &Context,
    rr: &RedisReplication,
    ns: &str,
    credentials: &Credentials,
) -> Option<Following> {
    let spec = rr.spec.replica_of.as_ref()?;
    let sentinel_secret = spec
        .sentinel
        .as_ref()
        .and_then(|s| s.password_secret.as_ref());
    let passwords = (
        read_password(
            ctx,
            ns,
            spec.password_secret.as_ref(),
            "spec.replicaOf.passwordSecret",
        )
        .await,
        read_password(
            ctx,
            ns,
            sentinel_secret,
            "spec.replicaOf.sentinel.passwordSecret",
        )
        .await,
    );
    let (password, sentinel_password) = match passwords {
        (Ok(password), Ok(sentinel_password)) => (password, sentinel_password),
        (Err(why), _) | (_, Err(why)) => return Some(unusable(why)),
    };
    let source = locate(spec, sentinel_password.as_deref(), ctx.probe_timeout).await;
    let source_offset = match (&source, &credentials.tls) {
        // The operator's TLS client checks instance certificates of its own sets only.
        (Source::At(address), None) => {
            let creds = Credentials {
                password: password.clone().or_else(|| credentials.password.clone()),
                tls: None,
            };
            source_offset(address, &creds, ctx.probe_timeout).await
        }
        _ => None,
    };
    Some(Following {
        source,
        password,
        source_offset,
    })
}

/// A password from a Secret, when one is named, or why it cannot be used.
async fn read_password(
    ctx: &Context,
    ns: &str,
    selector: Option<&SecretKeySelector>,
    field: &'static str,
) -> Result<Option<String>, String> {
    let Some(selector) = selector else {
        return Ok(None);
    };
    let bytes = secret_bytes(ctx, ns, &selector.name, &selector.key, field)
        .await
        .map_err(|e| e.to_string())?;
    String::from_utf8(bytes).map(Some).map_err(|_| {
        format!(
            "the password in Secret {} (key {}) is not UTF-8",
            selector.name, selector.key
        )
    })
}

fn unusable(why: String) -> Following {
    Following {
        source: Source::Unresolved(why),
        password: None,
        source_offset: None,
    }
}

async fn locate(
    spec: &ReplicaOfSpec,
    sentinel_password: Option<&str>,
    timeout: Duration,
) -> Source {
    if let Some(master) = &spec.master {
        return match port(master.port, "master") {
            Ok(p) => Source::At(Address::new(master.host.clone(), p)),
            Err(why) => Source::Unresolved(why),
        };
    }
    let Some(sentinel) = &spec.sentinel else {
        return Source::Unresolved("spec.replicaOf names no source".into());
    };
    let sentinel_port = match port(sentinel.port, "sentinel") {
        Ok(p) => p,
        Err(why) => return Source::Unresolved(why),
    };
    let at = format!("{}:{}", sentinel.host, sentinel.port);
    let asked = async {
        let mut info = (sentinel.host.as_str(), sentinel_port).into_connection_info()?;
        if let Some(password) = sentinel_password {
            let settings = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(settings);
        }
        let client = ::redis::Client::open(info)?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        ::redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(&sentinel.master_name)
            .query_async::<Option<(String, u16)>>(&mut conn)
            .await
    };
    match tokio::time::timeout(timeout, asked).await {
        Ok(Ok(Some((host, port)))) => Source::At(Address::new(host, port)),
        Ok(Ok(None)) => Source::Unresolved(format!(
            "Sentinel {at} knows no master named {}",
            sentinel.master_name
        )),
        Ok(Err(e)) => Source::Unresolved(format!("Sentinel {at}: {e}")),
        Err(_) => Source::Unresolved(format!(
            "Sentinel {at} did not answer within {}ms",
            timeout.as_millis()
        )),
    }
}

/// The schema bounds ports; an object written before that is told apart, not truncated.
fn port(port: i32, field: &str) -> Result<u16, String> {
    u16::try_from(port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("spec.replicaOf.{field}.port {port} is not a TCP port"))
}

async fn source_offset(address: &Address, creds: &Credentials, timeout: Duration) -> Option<i64> {
    let mut client = InstanceClient::connect(&address.host, address, creds, timeout)
        .await
        .ok()?;
    client.replication_info().await.ok().map(|info| info.offset)
}

/// `status.replicaOf` from what the designated master reports.
pub fn report(following: &Following, designated: Option<&ObservedInstance>) -> ReplicaOfStatus {
    let info: Option<&ReplicationInfo> = designated.and_then(|i| i.redis.as_ref());
    let source = following.source.address();
    let linked = info.is_some_and(|r| r.following() == source && r.is_synced_replica());
    let message = match (&following.source, designated, linked) {
        (Source::Unresolved(why), _, _) => Some(why.clone()),
        (_, None, _) => Some("no designated master yet".into()),
        (_, Some(d), false) => Some(format!("{} is not linked to the source", d.name)),
        _ => None,
    };
    ReplicaOfStatus {
        source: source.map(ToString::to_string),
        link: if linked {
            LinkStatus::Up
        } else {
            LinkStatus::Down
        },
        lag_bytes: match (linked, following.source_offset, info) {
            (true, Some(at_source), Some(r)) => Some((at_source - r.offset).max(0)),
            _ => None,
        },
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::plan::fixtures::{info, inst, replica_role};

    fn following(source: Source, source_offset: Option<i64>) -> Following {
        Following {
            source,
            password: None,
            source_offset,
        }
    }

    fn source() -> Address {
        Address::new("10.9.0.5", 6379)
    }

    #[test]
    fn a_linked_designated_master_reports_its_lag_to_the_source() {
        let designated = inst(0, Some(info(replica_role(source(), None), 900)), None);
        let report = report(
            &following(Source::At(source()), Some(1000)),
            Some(&designated),
        );
        assert_eq!(report.link, LinkStatus::Up);
        assert_eq!(report.lag_bytes, Some(100));
        assert_eq!(report.source.as_deref(), Some("10.9.0.5:6379"));
        assert_eq!(report.message, None);
    }

    #[test]
    fn a_link_down_or_an_unresolved_source_says_why_and_measures_no_lag() {
        let down = inst(0, Some(info(replica_role(source(), Some(4)), 900)), None);
        let report_down = report(&following(Source::At(source()), Some(1000)), Some(&down));
        assert_eq!(report_down.link, LinkStatus::Down);
        assert_eq!(report_down.lag_bytes, None);
        assert_eq!(
            report_down.message.as_deref(),
            Some("cache-0 is not linked to the source")
        );
        let lost = following(
            Source::Unresolved("Sentinel s:1 did not answer".into()),
            None,
        );
        let report_lost = report(&lost, Some(&down));
        assert_eq!(report_lost.source, None);
        assert_eq!(
            report_lost.message.as_deref(),
            Some("Sentinel s:1 did not answer")
        );
    }

    #[test]
    fn ports_outside_tcp_are_refused_by_name() {
        assert_eq!(port(26379, "sentinel"), Ok(26379));
        assert_eq!(
            port(70000, "master"),
            Err("spec.replicaOf.master.port 70000 is not a TCP port".into())
        );
        assert!(port(0, "master").is_err());
    }
}

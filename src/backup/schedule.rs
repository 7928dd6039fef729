//! `RedisScheduledBackup`: creates a `RedisBackup` at every time its cron expression names and
//! keeps only the completed backups its retention allows, deleting the others' objects first.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use tracing::{Instrument, info_span, warn};

use super::{Error, kube_error, open_store};
use crate::api::{
    BackupPhase, RedisBackup, RedisBackupSpec, RedisScheduledBackup, RedisScheduledBackupStatus,
    RetentionPolicy,
};
use crate::controller::Context;

/// The label naming the schedule that created a backup.
pub const SCHEDULE_LABEL: &str = "redis.vigil.dev/scheduled-backup";

/// Failed backups of a schedule kept for their error messages; older ones are deleted.
const FAILED_KEPT: usize = 3;

/// A schedule with nothing due looks again at least this often (retention by age, a changed
/// backup's phase).
const RECHECK: Duration = Duration::from_secs(60);

/// Runs the RedisScheduledBackup controller until a shutdown signal; a change of one of its
/// backups (one completing) wakes its schedule for retention.
pub async fn run(ctx: Arc<Context>, namespace: Option<&str>) {
    let (schedules, backups) = match namespace {
        Some(ns) => (
            Api::namespaced(ctx.client.clone(), ns),
            Api::<RedisBackup>::namespaced(ctx.client.clone(), ns),
        ),
        None => (Api::all(ctx.client.clone()), Api::all(ctx.client.clone())),
    };
    let labelled = watcher::Config::default().labels(SCHEDULE_LABEL);
    Controller::<RedisScheduledBackup>::new(schedules, watcher::Config::default())
        .watches(backups, labelled, |backup| {
            let schedule = backup.labels().get(SCHEDULE_LABEL)?.clone();
            Some(kube::runtime::reflector::ObjectRef::new(&schedule).within(&backup.namespace()?))
        })
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

fn error_policy(rsb: Arc<RedisScheduledBackup>, error: &Error, _ctx: Arc<Context>) -> Action {
    warn!(schedule = %rsb.name_any(), error = %error, "scheduled backup reconcile error");
    Action::requeue(Duration::from_secs(10))
}

async fn reconcile(rsb: Arc<RedisScheduledBackup>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = info_span!(
        "schedule",
        namespace = rsb.namespace().unwrap_or_default(),
        name = rsb.name_any()
    );
    reconcile_inner(&rsb, &ctx).instrument(span).await
}

/// What the schedule says about `now`.
#[derive(Debug, PartialEq)]
pub enum Due {
    /// Take a backup now, for the scheduled time `at`; the one after is `next`.
    Now {
        at: DateTime<Utc>,
        next: DateTime<Utc>,
    },
    /// Nothing before `next`.
    Later { next: DateTime<Utc> },
}

/// Pure: whether a backup is due at `now`, given the last scheduled time (or, before the first,
/// when the schedule was created and whether it starts immediately). Missed times collapse into
/// one backup, as a CronJob's do.
pub fn due(
    cron: &croner::Cron,
    last: Option<DateTime<Utc>>,
    created: DateTime<Utc>,
    immediate: bool,
    now: DateTime<Utc>,
) -> Result<Due, croner::errors::CronError> {
    let next_after = |t: &DateTime<Utc>| cron.find_next_occurrence(t, false);
    if last.is_none() && immediate {
        return Ok(Due::Now {
            at: now,
            next: next_after(&now)?,
        });
    }
    let first = next_after(&last.unwrap_or(created))?;
    if first > now {
        return Ok(Due::Later { next: first });
    }
    let at = cron.find_previous_occurrence(&now, true)?;
    Ok(Due::Now {
        at,
        next: next_after(&now)?,
    })
}

/// Pure: which of a schedule's backups retention deletes. `backups` are (name, phase,
/// created); completed ones are kept while they are among the newest `count` and younger than
/// `max_age`; the newest completed one is always kept. Running and pending ones are never
/// deleted; of the failed ones only the newest few.
pub fn expired(
    backups: &[(String, Option<BackupPhase>, DateTime<Utc>)],
    retention: &RetentionPolicy,
    now: DateTime<Utc>,
) -> Vec<String> {
    let mut sorted: Vec<_> = backups.iter().collect();
    sorted.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| b.0.cmp(&a.0)));
    let max_age = retention.max_age.as_deref().and_then(parse_age);
    let count = retention.count.and_then(|c| usize::try_from(c).ok());
    let mut completed = 0;
    let mut failed = 0;
    let mut out = Vec::new();
    for (name, phase, created) in sorted {
        match phase {
            Some(BackupPhase::Completed) => {
                completed += 1;
                let too_many = count.is_some_and(|c| completed > c);
                let too_old = max_age.is_some_and(|age| now - *created > age);
                if completed > 1 && (too_many || too_old) {
                    out.push(name.clone());
                }
            }
            Some(BackupPhase::Failed) => {
                failed += 1;
                if failed > FAILED_KEPT {
                    out.push(name.clone());
                }
            }
            _ => {}
        }
    }
    out
}

/// `36h`, `7d`, `4w`, `90m` (the schema's pattern).
fn parse_age(text: &str) -> Option<chrono::TimeDelta> {
    let (number, unit) = text.split_at(text.len().checked_sub(1)?);
    let n: i64 = number.parse().ok()?;
    match unit {
        "m" => chrono::TimeDelta::try_minutes(n),
        "h" => chrono::TimeDelta::try_hours(n),
        "d" => chrono::TimeDelta::try_days(n),
        "w" => chrono::TimeDelta::try_weeks(n),
        _ => None,
    }
}

fn chrono_of(time: &Time) -> DateTime<Utc> {
    DateTime::from_timestamp(
        time.0.as_second(),
        time.0.subsec_nanosecond().unsigned_abs(),
    )
    .unwrap_or_default()
}

fn time_of(at: DateTime<Utc>) -> Time {
    Time(Timestamp::from_second(at.timestamp()).unwrap_or(Timestamp::UNIX_EPOCH))
}

async fn reconcile_inner(rsb: &RedisScheduledBackup, ctx: &Context) -> Result<Action, Error> {
    let ns = rsb.namespace().unwrap_or_default();
    let name = rsb.name_any();
    let api: Api<RedisScheduledBackup> = Api::namespaced(ctx.client.clone(), &ns);
    let backups: Api<RedisBackup> = Api::namespaced(ctx.client.clone(), &ns);
    let mut status = rsb.status.clone().unwrap_or_default();
    let previous = status.clone();
    let now = Utc::now();

    let cron = match rsb.spec.schedule.parse::<croner::Cron>() {
        Ok(cron) => cron,
        Err(e) => {
            status.error = Some(format!(
                "spec.schedule {:?} is not a cron expression: {e}",
                rsb.spec.schedule
            ));
            write_status(&api, &name, &previous, &status).await?;
            return Ok(Action::await_change());
        }
    };
    let created = rsb
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(now, chrono_of);
    let last = status.last_schedule_time.as_ref().map(chrono_of);
    let due = due(&cron, last, created, rsb.spec.immediate, now).map_err(|e| {
        warn!(error = %e, "no next time");
        e
    });
    status.error = None;
    let next = match due {
        Err(e) => {
            status.error = Some(format!(
                "spec.schedule {:?} names no future time: {e}",
                rsb.spec.schedule
            ));
            None
        }
        Ok(Due::Later { next }) => Some(next),
        Ok(Due::Now { next, .. }) if rsb.spec.suspend => Some(next),
        Ok(Due::Now { at, next }) => {
            let backup = create_backup(&backups, rsb, at).await?;
            ctx.event_on(
                rsb,
                EventType::Normal,
                "BackupScheduled",
                "Schedule",
                format!("created RedisBackup {backup}"),
            )
            .await;
            status.last_schedule_time = Some(time_of(at));
            status.last_backup = Some(backup);
            Some(next)
        }
    };
    status.next_schedule_time = next.map(time_of);
    write_status(&api, &name, &previous, &status).await?;
    apply_retention(ctx, &backups, rsb, now).await?;

    let wait = next
        .and_then(|n| (n - Utc::now()).to_std().ok())
        .map_or(RECHECK, |d| d.min(RECHECK));
    Ok(Action::requeue(wait.max(Duration::from_millis(200))))
}

async fn create_backup(
    backups: &Api<RedisBackup>,
    rsb: &RedisScheduledBackup,
    at: DateTime<Utc>,
) -> Result<String, Error> {
    // Named by the scheduled time: a retried reconcile finds the one it made (409) rather
    // than making a second.
    let name = format!("{}-{}", rsb.name_any(), at.format("%Y%m%d%H%M%S"));
    let backup = RedisBackup {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some([(SCHEDULE_LABEL.to_string(), rsb.name_any())].into()),
            ..ObjectMeta::default()
        },
        spec: RedisBackupSpec {
            replication: rsb.spec.replication.clone(),
            target: rsb.spec.target,
        },
        status: None,
    };
    match backups.create(&PostParams::default(), &backup).await {
        Ok(_) => Ok(name),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(name),
        Err(e) => Err(kube_error(format!("creating RedisBackup {name}"))(e)),
    }
}

async fn apply_retention(
    ctx: &Context,
    backups: &Api<RedisBackup>,
    rsb: &RedisScheduledBackup,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let selector = format!("{SCHEDULE_LABEL}={}", rsb.name_any());
    let list = backups
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(kube_error(format!(
            "listing the backups of schedule {}",
            rsb.name_any()
        )))?;
    let summary: Vec<_> = list
        .items
        .iter()
        .map(|b| {
            let created = b
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or(now, chrono_of);
            (
                b.name_any(),
                b.status.as_ref().and_then(|s| s.phase),
                created,
            )
        })
        .collect();
    let ns = rsb.namespace().unwrap_or_default();
    for name in expired(&summary, &rsb.spec.retention, now) {
        let Some(backup) = list.items.iter().find(|b| b.name_any() == name) else {
            continue;
        };
        // The objects go first: a backup resource whose objects are gone is worse than
        // objects nothing points at.
        if let Some(st) = &backup.status
            && let (Some(spec), Some(dir)) = (&st.object_store, &st.path)
        {
            open_store(ctx, &ns, spec).await?.delete(dir).await?;
        }
        match backups.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(kube_error(format!("deleting RedisBackup {name}"))(e)),
        }
        ctx.event_on(
            rsb,
            EventType::Normal,
            "BackupExpired",
            "Retention",
            format!("deleted RedisBackup {name} and its objects"),
        )
        .await;
    }
    Ok(())
}

async fn write_status(
    api: &Api<RedisScheduledBackup>,
    name: &str,
    previous: &RedisScheduledBackupStatus,
    status: &RedisScheduledBackupStatus,
) -> Result<(), Error> {
    if previous == status {
        return Ok(());
    }
    super::write_status(api, name, status).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().expect("a time")
    }

    #[test]
    fn a_schedule_is_due_once_its_time_passed_and_collapses_missed_times() {
        let cron: croner::Cron = "0 * * * *".parse().expect("hourly");
        let created = at("2026-01-01T10:20:00Z");
        assert_eq!(
            due(&cron, None, created, false, at("2026-01-01T10:59:00Z")).expect("due"),
            Due::Later {
                next: at("2026-01-01T11:00:00Z")
            }
        );
        assert_eq!(
            due(
                &cron,
                Some(at("2026-01-01T11:00:00Z")),
                created,
                false,
                at("2026-01-01T14:30:00Z")
            )
            .expect("due"),
            Due::Now {
                at: at("2026-01-01T14:00:00Z"),
                next: at("2026-01-01T15:00:00Z")
            },
            "three missed hours make one backup"
        );
        let now = at("2026-01-01T10:21:00Z");
        assert!(
            matches!(due(&cron, None, created, true, now), Ok(Due::Now { at, .. }) if at == now)
        );
    }

    #[test]
    fn seconds_are_optional() {
        let cron: croner::Cron = "*/10 * * * * *".parse().expect("every 10 s");
        let next = cron
            .find_next_occurrence(&at("2026-01-01T10:00:01Z"), false)
            .expect("next");
        assert_eq!(next, at("2026-01-01T10:00:10Z"));
    }

    #[test]
    fn retention_keeps_the_newest_count_and_never_the_last_completed() {
        let now = at("2026-01-10T00:00:00Z");
        let backups: Vec<_> = (1..=5)
            .map(|d| {
                (
                    format!("b{d}"),
                    Some(BackupPhase::Completed),
                    at(&format!("2026-01-0{d}T00:00:00Z")),
                )
            })
            .chain([(
                "running".to_string(),
                Some(BackupPhase::Running),
                at("2026-01-01T00:00:00Z"),
            )])
            .collect();
        let count = RetentionPolicy {
            count: Some(2),
            max_age: None,
        };
        assert_eq!(expired(&backups, &count, now), ["b3", "b2", "b1"]);
        let age = RetentionPolicy {
            count: None,
            max_age: Some("6d".into()),
        };
        assert_eq!(
            expired(&backups, &age, now),
            ["b3", "b2", "b1"],
            "older than 6 days"
        );
        let all_old = RetentionPolicy {
            count: None,
            max_age: Some("1d".into()),
        };
        assert_eq!(
            expired(&backups, &all_old, now),
            ["b4", "b3", "b2", "b1"],
            "the newest stays"
        );
        assert!(expired(&backups, &RetentionPolicy::default(), now).is_empty());
    }

    #[test]
    fn ages_parse_in_their_units() {
        assert_eq!(parse_age("90m"), chrono::TimeDelta::try_minutes(90));
        assert_eq!(parse_age("2w"), chrono::TimeDelta::try_days(14));
        assert_eq!(parse_age("7x"), None);
    }
}

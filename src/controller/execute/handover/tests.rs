//! The order of a handover's commands, against scripted instances (`crate::redis::fake`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::redis::Credentials;
use crate::redis::fake::{self, Log, Reply, master_info, replica_info};

/// The old master at `offsets` (one per `INFO`, the last repeated), and a replica of it that
/// holds `behind` bytes less and gains `step` per `INFO` until level, and answers as master
/// once the old master was sent `FAILOVER`.
async fn pair(offsets: Vec<i64>, behind: i64, step: i64) -> (Log, Address, Address) {
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let mut reads = 0;
    let old = fake::start(
        "old",
        log.clone(),
        Box::new(move |words| match words[0].as_str() {
            "INFO" => {
                let offset = offsets[reads.min(offsets.len() - 1)];
                reads += 1;
                Reply::Bulk(master_info(offset))
            }
            _ => Reply::Ok,
        }),
    )
    .await;
    let seen = log.clone();
    let old_address = old.clone();
    let mut offset = 100 - behind;
    let new = fake::start(
        "new",
        log.clone(),
        Box::new(move |words| match words[0].as_str() {
            "INFO" => {
                let swapped = seen
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .any(|l| l.starts_with("old: FAILOVER"));
                if swapped {
                    return Reply::Bulk(master_info(offset));
                }
                let text = replica_info(&old_address, offset);
                offset += step;
                Reply::Bulk(text)
            }
            _ => Reply::Ok,
        }),
    )
    .await;
    (log, old, new)
}

async fn run(
    old: &Address,
    new: &Address,
    catch_up: Duration,
) -> Result<(Result<Timings, Error>, Result<(), Error>), Error> {
    let none = Credentials {
        password: None,
        tls: None,
    };
    let timeout = Duration::from_secs(2);
    let mut o = InstanceClient::connect("old", old, &none, timeout)
        .await
        .expect("old");
    let mut n = InstanceClient::connect("new", new, &none, timeout)
        .await
        .expect("new");
    let ends = Ends {
        old: &mut o,
        new: &mut n,
        old_address: old,
        new_address: new,
        to: "new",
    };
    hand_over(ends, catch_up, timeout).await
}

/// The log without the connections' setup (`CLIENT SETINFO`, ...).
fn commands(log: &Log) -> Vec<String> {
    log.lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|l| !l.contains("SETINFO"))
        .cloned()
        .collect()
}

fn position(log: &[String], line: &str) -> usize {
    log.iter()
        .position(|l| l.starts_with(line))
        .unwrap_or_else(|| panic!("{line:?} not sent: {log:#?}"))
}

#[tokio::test]
async fn writes_pause_the_target_catches_up_then_failover_is_forced_and_clients_released() {
    let (log, old, new) = pair(vec![100], 30, 10).await;
    let (timings, released) = run(&old, &new, SWITCHOVER_TIMEOUT)
        .await
        .expect("handed over");
    let timings = timings.expect("swapped");
    released.expect("released");
    assert_eq!(timings.offset, 100);
    let log = commands(&log);
    let pause = position(&log, "old: CLIENT PAUSE");
    let failover = position(&log, "old: FAILOVER");
    assert_eq!(log[pause], "old: CLIENT PAUSE 8000 WRITE", "{log:#?}");
    assert_eq!(
        log[failover],
        format!("old: FAILOVER TO 127.0.0.1 {} TIMEOUT 1 FORCE", new.port)
    );
    // 70, 80, 90, 100: FAILOVER only after the target was read holding all 100 bytes.
    let target_reads = log[pause..failover]
        .iter()
        .filter(|l| l.starts_with("new: INFO"))
        .count();
    assert_eq!(target_reads, 4, "{log:#?}");
    assert_eq!(
        log[log.len() - 5..],
        [
            "old: MULTI",
            "old: CLIENT KILL TYPE normal SKIPME yes",
            "old: CLIENT KILL TYPE pubsub SKIPME yes",
            "old: CLIENT UNPAUSE",
            "old: EXEC"
        ],
        "clients closed and the pause lifted together, once the target is master: {log:#?}"
    );
    assert!(log[failover..].iter().any(|l| l.starts_with("new: INFO")));
}

#[tokio::test]
async fn a_master_offset_that_moves_is_caught_up_with_too() {
    // The old master's second reading is higher: the target must reach that one.
    let (log, old, new) = pair(vec![100, 120], 0, 10).await;
    let (timings, _) = run(&old, &new, SWITCHOVER_TIMEOUT)
        .await
        .expect("handed over");
    assert_eq!(timings.expect("swapped").offset, 120);
    let log = commands(&log);
    let failover = position(&log, "old: FAILOVER");
    let target_reads = log[..failover]
        .iter()
        .filter(|l| l.starts_with("new: INFO"))
        .count();
    assert_eq!(target_reads, 3, "100, 110, 120: {log:#?}");
}

#[tokio::test]
async fn a_target_that_does_not_catch_up_gets_no_failover_and_the_pause_is_lifted() {
    let (log, old, new) = pair(vec![100], 50, 0).await;
    let err = run(&old, &new, Duration::from_millis(30))
        .await
        .expect_err("gave up");
    assert!(
        matches!(
            err,
            Error::SwitchoverOutOfTime {
                offset: 50,
                wanted: 100,
                ..
            }
        ),
        "{err}"
    );
    let log = commands(&log);
    assert!(!log.iter().any(|l| l.contains("FAILOVER")), "{log:#?}");
    assert!(!log.iter().any(|l| l.contains("KILL")), "{log:#?}");
    assert_eq!(log.last().map(String::as_str), Some("old: CLIENT UNPAUSE"));
}

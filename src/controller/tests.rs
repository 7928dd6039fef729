//! When a reconcile looks again without a new fact (`next_look`).

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::next_look;
use super::plan::fixtures::{down_master, inst, lost_link_to};
use super::plan::{self, MasterDown};
use crate::api::RedisReplicationStatus;
use crate::labels::RoleLabel;

#[test]
fn a_suspected_master_is_looked_at_again_when_its_silence_is_due_for_the_record() {
    let ms = Duration::from_millis;
    let mut input = down_master(
        ms(1600),
        vec![
            inst(0, None, Some(RoleLabel::Master)),
            inst(1, lost_link_to(0, 10, 1), Some(RoleLabel::Replica)),
            inst(2, lost_link_to(0, 10, 1), Some(RoleLabel::Replica)),
        ],
    );
    input.policy.down_after = ms(5000);
    input.policy.silence_recorded_for = None;
    let p = plan::plan(&input);
    assert_eq!(p.master_down, Some(MasterDown::Suspected));
    assert!(!p.record_silence, "1.6 s of silence: not yet");
    let unrecorded = RedisReplicationStatus::default();
    // The record is due at downAfter less the hold (5 s - 3.05 s): 350 ms on, not at the next
    // probe interval (1 s), which put the hold's end 0.65 s after downAfter's.
    assert_eq!(next_look(&input, &p, &unrecorded, ms(1000)), ms(350));
    let recorded = RedisReplicationStatus {
        master_silent_since: Some(Time(k8s_openapi::jiff::Timestamp::now())),
        ..RedisReplicationStatus::default()
    };
    assert_eq!(
        next_look(&input, &p, &recorded, ms(1000)),
        ms(1000),
        "recorded already: downAfter's end (3.4 s on), within a probe interval"
    );
}

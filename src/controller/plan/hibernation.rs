//! Hibernation: every pod stops, the claims and the status that names the master stay. The
//! replicas go first; the master goes once no replica pod is left, so it keeps every write it
//! took (its agent stops at once, saving, when it has no replica to hand over to) and is the
//! one that holds the most data when the set wakes.

use super::{MasterState, Plan, PlanInput};

pub(super) fn plan_hibernation(input: &PlanInput) -> Plan {
    let master = input.recorded.current_master.as_deref();
    let is_master = |name: &str| Some(name) == master;
    // Pods still going count: a replica that is still stopping may still be linked.
    let replicas_left = input.instances.iter().any(|i| !is_master(&i.name));
    let stop = input
        .instances
        .iter()
        .filter(|i| !i.deleting && (!is_master(&i.name) || !replicas_left))
        .map(|i| i.name.clone())
        .collect();
    Plan {
        stop,
        ..Plan::idle(MasterState::Hibernating)
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{input, inst, master, recorded, replica_of};
    use super::super::{Step, plan};
    use crate::labels::RoleLabel;

    fn hibernating(instances: Vec<super::super::ObservedInstance>) -> super::super::PlanInput {
        let mut i = input(3, recorded(0, 4), instances);
        i.hibernate = true;
        i
    }

    #[test]
    fn replicas_stop_first_and_nothing_else_happens() {
        let i = hibernating(vec![
            inst(0, master(100), Some(RoleLabel::Master)),
            inst(1, replica_of(0, 100), Some(RoleLabel::Replica)),
            inst(2, None, None),
        ]);
        let p = plan(&i);
        assert_eq!(
            p.steps(),
            vec![Step::Stop("cache-1".into()), Step::Stop("cache-2".into())]
        );
    }

    #[test]
    fn the_master_stops_once_no_replica_pod_is_left() {
        let mut going = inst(1, replica_of(0, 100), None);
        going.deleting = true;
        let p = plan(&hibernating(vec![
            inst(0, master(100), Some(RoleLabel::Master)),
            going,
        ]));
        assert!(p.steps().is_empty(), "a replica is still stopping");
        let p = plan(&hibernating(vec![inst(
            0,
            master(100),
            Some(RoleLabel::Master),
        )]));
        assert_eq!(p.steps(), vec![Step::Stop("cache-0".into())]);
    }

    #[test]
    fn a_hibernated_set_creates_no_pod() {
        let p = plan(&hibernating(vec![]));
        assert!(p.steps().is_empty() && !p.acts());
    }
}

//! The commands of a planned handover (safety rule 7): pause the old master's writes, hand the
//! role over with `FAILOVER`, then close its clients and lift the pause in one transaction.
//!
//! `FAILOVER` alone waits for the target's `REPLCONF ACK` to match the master's offset, and a
//! replica acks only once a second (the master sends no `GETACK` while writes are paused, since
//! that would move the offset): on average half a second of paused writes for a handover that
//! needs a few round trips. So the operator pauses writes itself, reads the target's own offset
//! until it has every byte, and then lets `FAILOVER ... FORCE` swap the roles at once.

use std::time::Duration;

use super::{Address, Error, InstanceClient, disconnect_clients};

impl InstanceClient {
    /// `CLIENT PAUSE ms WRITE`: write commands wait (they are not refused) until the pause is
    /// lifted or `bound` passes, so an operator that dies mid-handover never leaves them stuck.
    /// Replication, reads and `INFO` go on; with writes paused the offset stays put.
    pub async fn pause_writes(&mut self, bound: Duration) -> Result<(), Error> {
        let _: String = self
            .query("CLIENT PAUSE WRITE", &pause_writes(bound))
            .await?;
        Ok(())
    }

    /// `CLIENT UNPAUSE`: the handover is abandoned, the master takes writes again.
    pub async fn unpause(&mut self) -> Result<(), Error> {
        let mut cmd = ::redis::cmd("CLIENT");
        cmd.arg("UNPAUSE");
        let _: String = self.query("CLIENT UNPAUSE", &cmd).await?;
        Ok(())
    }

    /// `FAILOVER TO host port TIMEOUT ms [FORCE]`. With `force`, the roles swap once `timeout`
    /// has passed even if the target has not acknowledged the master's offset: only for a caller
    /// that has seen the target hold every byte while writes were paused.
    pub async fn failover_to(
        &mut self,
        target: &Address,
        timeout: Duration,
        force: bool,
    ) -> Result<(), Error> {
        let _: String = self
            .query("FAILOVER", &failover(target, timeout, force))
            .await?;
        Ok(())
    }

    /// After `FAILOVER`, which changes the role but leaves the clients connected (where every
    /// write now fails with READONLY): closes normal and pub/sub clients (not replicas, not this
    /// connection) and lifts the operator's pause, in one `MULTI`/`EXEC`, so no paused write
    /// runs on the demoted instance and every client re-resolves the master.
    pub async fn release_clients(&mut self) -> Result<(), Error> {
        let _: ::redis::Value = self
            .query_pipe("MULTI CLIENT KILL CLIENT UNPAUSE", &release_clients())
            .await?;
        Ok(())
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn pause_writes(bound: Duration) -> ::redis::Cmd {
    let mut cmd = ::redis::cmd("CLIENT");
    cmd.arg("PAUSE").arg(millis(bound)).arg("WRITE");
    cmd
}

fn failover(target: &Address, timeout: Duration, force: bool) -> ::redis::Cmd {
    let mut cmd = ::redis::cmd("FAILOVER");
    cmd.arg("TO")
        .arg(&target.host)
        .arg(target.port)
        .arg("TIMEOUT")
        .arg(millis(timeout));
    if force {
        cmd.arg("FORCE");
    }
    cmd
}

/// `MULTI; CLIENT KILL TYPE normal; CLIENT KILL TYPE pubsub; CLIENT UNPAUSE; EXEC`.
fn release_clients() -> ::redis::Pipeline {
    let mut pipe = ::redis::pipe();
    pipe.atomic();
    disconnect_clients(&mut pipe).cmd("CLIENT").arg("UNPAUSE");
    pipe
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::tests::commands;

    fn words(cmd: &::redis::Cmd) -> String {
        let mut pipe = ::redis::pipe();
        pipe.add_command(cmd.clone());
        commands(&pipe).join(" ")
    }

    #[test]
    fn the_pause_covers_writes_only_and_is_bounded() {
        assert_eq!(
            words(&pause_writes(Duration::from_secs(7))),
            "CLIENT PAUSE 7000 WRITE"
        );
    }

    #[test]
    fn failover_forces_only_when_asked() {
        let to = Address::new("10.244.0.12", 6379);
        assert_eq!(
            words(&failover(&to, Duration::from_millis(1), true)),
            "FAILOVER TO 10.244.0.12 6379 TIMEOUT 1 FORCE"
        );
        assert_eq!(
            words(&failover(&to, Duration::from_secs(5), false)),
            "FAILOVER TO 10.244.0.12 6379 TIMEOUT 5000"
        );
        // A zero timeout would mean "none", which FORCE refuses.
        assert!(words(&failover(&to, Duration::ZERO, true)).contains("TIMEOUT 1 "));
    }

    #[test]
    fn clients_are_closed_before_the_pause_is_lifted_in_one_transaction() {
        assert_eq!(
            commands(&release_clients()),
            [
                "MULTI",
                "CLIENT KILL TYPE normal SKIPME yes",
                "CLIENT KILL TYPE pubsub SKIPME yes",
                "CLIENT UNPAUSE",
                "EXEC"
            ]
        );
    }
}

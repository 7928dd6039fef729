//! Rule 7, the planned handover of the master role: no acknowledged write lost, and writes
//! paused only for the few round trips the handover needs.
//!
//! Order: both connections open first (nothing slow once writes are paused); writes paused on
//! the old master (bounded, so a dead operator never leaves them stuck); the target's own
//! offset read until it holds every byte of the old master's; `FAILOVER ... FORCE` swaps the
//! roles without waiting for the replica's once-a-second ack (see `crate::redis::handover`);
//! the target seen as master; the old master's clients closed and the pause lifted together.

use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use super::Target;
use crate::controller::{Context, Error};
use crate::redis::{Address, InstanceClient};

#[cfg(test)]
mod tests;

/// How long the target may take to catch up once writes are paused, and then to answer as
/// master once `FAILOVER` is sent.
const SWITCHOVER_TIMEOUT: Duration = Duration::from_secs(5);
/// The pause outlasts the catch-up deadline by one command's response time and this much:
/// `FAILOVER` (which then holds writes itself) is only sent before the deadline, so no write
/// slips in between the offset check and it.
const PAUSE_MARGIN: Duration = Duration::from_secs(1);
/// `FAILOVER`'s own wait for the target's ack, after which FORCE swaps the roles: the target
/// was already seen holding every byte.
const FORCE_AFTER: Duration = Duration::from_millis(1);
/// Between two reads of an offset or a role. Redis has nothing to await these with (and
/// sends no acks while writes are paused); each read of the old master also wakes its event
/// loop, where `FAILOVER` checks its timeout.
const POLL: Duration = Duration::from_millis(2);

/// The old and the new master of a handover.
struct Ends<'a> {
    old: &'a mut InstanceClient,
    new: &'a mut InstanceClient,
    old_address: &'a Address,
    new_address: &'a Address,
    /// The new master's name, for errors.
    to: &'a str,
}

/// What a handover took, from the write pause on.
#[derive(Debug)]
struct Timings {
    offset: i64,
    synced: Duration,
    promoted: Duration,
}

/// Hands the master role from `from` to `to`; on error the old master takes writes again
/// unless the roles were already swapped (the caller rolls the status back).
pub(super) async fn switch_over(
    ctx: &Context,
    target: &Target<'_>,
    from: &str,
    to: &str,
) -> Result<(), Error> {
    let (old_address, new_address) = (target.address(from)?, target.address(to)?);
    let mut old = target.client(ctx, from).await?;
    let mut new = target.client(ctx, to).await?;
    let began = Instant::now();
    let ends = Ends {
        old: &mut old,
        new: &mut new,
        old_address: &old_address,
        new_address: &new_address,
        to,
    };
    let swapped = hand_over(ends, SWITCHOVER_TIMEOUT, ctx.probe_timeout).await;
    // Closed either way once FAILOVER was sent: after a swap the clients must re-resolve the
    // master; after a failure the old master is writable again and the pause must not
    // outlive the attempt. A broken connection gets a fresh one.
    if swapped
        .as_ref()
        .is_ok_and(|(_, released)| released.is_err())
    {
        let retried = match target.client(ctx, from).await {
            Ok(mut c) => c.release_clients().await.map_err(Error::from),
            Err(e) => Err(e),
        };
        if let Err(e) = retried {
            warn!(instance = %from, error = %e, "could not close the clients of the old master");
        }
    }
    let (timings, _) = swapped?;
    let timings = timings?;
    info!(
        from = %from,
        to = %to,
        offset = timings.offset,
        synced_ms = millis(timings.synced),
        promoted_ms = millis(timings.promoted),
        clients_closed_ms = millis(began.elapsed()),
        "switchover completed (times from the write pause)"
    );
    Ok(())
}

/// The handover on open connections. Err: nothing swapped and the old master writable again
/// (FAILOVER never sent). Ok: FAILOVER was sent; the swap's outcome, and whether closing the
/// old master's clients and lifting the pause worked on this connection.
async fn hand_over(
    ends: Ends<'_>,
    catch_up: Duration,
    response: Duration,
) -> Result<(Result<Timings, Error>, Result<(), Error>), Error> {
    let began = Instant::now();
    let deadline = began + catch_up;
    ends.old
        .pause_writes(catch_up + response + PAUSE_MARGIN)
        .await?;
    let checked = caught_up(ends.old, ends.new, ends.old_address, deadline)
        .await
        .and_then(|(offset, wanted)| {
            // Late, the pause may lift before FAILOVER arrives.
            if offset >= wanted && Instant::now() < deadline {
                Ok(offset)
            } else {
                Err(Error::SwitchoverOutOfTime {
                    target: ends.to.to_string(),
                    offset,
                    wanted,
                })
            }
        });
    let offset = match checked {
        Ok(offset) => offset,
        Err(e) => {
            if let Err(u) = ends.old.unpause().await {
                warn!(error = %u, "could not lift the write pause (it lifts itself)");
            }
            return Err(e);
        }
    };
    let synced = began.elapsed();
    let swapped = match ends
        .old
        .failover_to(ends.new_address, FORCE_AFTER, true)
        .await
    {
        Ok(()) => promoted(ends.old, ends.new, ends.to, catch_up).await,
        Err(e) => Err(e.into()),
    };
    let timings = swapped.map(|()| Timings {
        offset,
        synced,
        promoted: began.elapsed(),
    });
    let released = ends.old.release_clients().await.map_err(Error::from);
    Ok((timings, released))
}

/// Waits, writes being paused on `old`, until `new` follows it and holds its whole offset, or
/// the deadline passes; returns the target's offset (-1: not following `old`) and the old
/// master's. The old master's is read again once the target reached it, so nothing that
/// moved it in between goes unseen.
async fn caught_up(
    old: &mut InstanceClient,
    new: &mut InstanceClient,
    old_address: &Address,
    deadline: Instant,
) -> Result<(i64, i64), Error> {
    let mut wanted = old.replication_info().await?.offset;
    loop {
        let info = new.replication_info().await?;
        let following = info.following() == Some(old_address);
        if following && info.offset >= wanted {
            let now = old.replication_info().await?.offset;
            if now == wanted {
                return Ok((info.offset, wanted));
            }
            wanted = now;
        }
        if Instant::now() >= deadline {
            return Ok((if following { info.offset } else { -1 }, wanted));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// After `FAILOVER`, which holds the old master's writes itself until it ends: until `new`
/// answers as master, within `bound`.
async fn promoted(
    old: &mut InstanceClient,
    new: &mut InstanceClient,
    to: &str,
    bound: Duration,
) -> Result<(), Error> {
    let deadline = Instant::now() + bound;
    loop {
        // Read for its side effect: the old master's event loop runs FAILOVER's checks.
        let _ = old.replication_info().await;
        if new.replication_info().await?.is_master() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::PromotionNotVerified(to.to_string()));
        }
        tokio::time::sleep(POLL).await;
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

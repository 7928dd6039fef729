//! How to read each part's figures: the notes under its table, and the method.

/// Why vigil's crash figures do not grow with downAfter.
pub(super) const CRASH_NOTE: &str = "\
How to read this: the crashed container is restarted by the kubelet (its first restart at \
once), and vigil's agent boots it fenced (read-only, following nobody). The operator then sees the master \
restarted and no longer a master, which is objective evidence, and fails over at once rather \
than waiting out `downAfterMilliseconds` (src/controller/plan.rs); so vigil's figures follow the \
restart back-off, not the detection timeout. A master that stays unreachable without \
restarting (frozen, partitioned) waits for `downAfterMilliseconds` as Sentinel does (both are \
measured below). Sentinel cannot tell a restart from a blip: its restarted instance stays \
down until the sentinels name another master (see below), so Sentinel always waits \
`down-after-milliseconds`, then agrees (quorum 2), elects a leader and promotes.";

/// How the repeat crash is set up, and what its figures include.
pub(super) const REPEAT_CRASH_NOTE: &str = "\
How to read this: each run first crashes the master once, unmeasured; once the set has failed \
over and the crashed instance is back as a replica (restarted at once: a first crash), the master \
is switched back to that instance (vigil: `redis.vigil.dev/switchover-to`; Sentinel: `SENTINEL \
FAILOVER` with that replica's `replica-priority` set to 1, so that Sentinel picks it, and back \
to 100 once it is master). Then that same instance is crashed again, measured, with no fresh \
restart history in between: its restart waits out the back-off, 10 s counted from the crash (the \
kubelet's CrashLoopBackOff for vigil's pod, the supervisor's copy of it for Sentinel's process), \
so *every replica follows* includes that wait for both. vigil does not wait for the restart to \
fail over: a container waiting in back-off is objective evidence too.";

/// What a frozen master costs each system.
pub(super) const FREEZE_NOTE: &str = "\
How to read this: a frozen master is silence, not evidence: its pod still runs and its address \
accepts connections that never answer. Sentinel waits `down-after-milliseconds`, agrees and \
promotes. vigil waits `downAfterMilliseconds`, needs the replicas' offsets to have stood still \
for the hold (they are asked at once when the master is recorded silent), and promotes only once \
a master cut off rather than frozen must have fenced itself (safety rule 9: the promotion hold, \
1.05 s at 1000 ms and 3.05 s at 5000 ms, counted from when the silence is recorded at the first \
probe the master missed; src/isolation.rs). Sentinel has no such wait, and no fence: a \
partitioned Sentinel master keeps taking writes. The master is resumed once a new one is up and \
the system names it to its clients (every sentinel does, for Sentinel).";

/// How the master is cut off on each side.
pub(super) const PARTITION_NOTE: &str = "\
How to read this: iptables rules drop every packet to and from the master, clients on the other \
side with the replicas and the watchers. vigil's are inside the pod's network namespace and spare \
its loopback and the kubelet's probes of the agent (port 8080), as a partitioned node's kubelet \
still probes its pods: the pod runs on (and reports itself not ready once it has fenced itself). \
Sentinel's are on `lo`, on every packet from or to the master's address (each instance and \
sentinel connects from its own: `bind-source-addr`). The figures count from when the rules are \
in. The rules are removed once a new master is up and the system names it to its clients (every \
sentinel does, for Sentinel), so *every replica follows* includes the old master's return (Sentinel converts it 8 s after it reports itself a master again, as after a \
switchover). Like a freeze this is silence: both wait out the detection timeout, and vigil holds \
the promotion until a master cut off must have fenced itself (see the freeze note).";

/// What a graceful stop is on each side.
pub(super) const DELETE_NOTE: &str = "\
How to read this: vigil's master pod is deleted with the default grace period (`kubectl delete \
pod`); its agent, given SIGTERM by the kubelet, waits (bounded) for the switchover that the \
pod's deletion makes the operator start (safety rule 7), then stops Redis, and the operator \
creates the pod anew; so this is a planned handover, and *every replica follows* includes the \
new pod's start. Sentinel's master gets SIGTERM: redis-server shuts down gracefully (pausing \
writes until its replicas have caught up, for at most `shutdown-timeout`, 10 s) and its \
supervisor restarts it at once with no restart history, as a new pod; Sentinel learns of it only \
when it stops answering, and waits `down-after-milliseconds` as for a crash. Both sides persist \
as vigil does by default (RDB, `save 3600 1 300 100 60 10000`), so a master stopped gracefully \
saves its data and returns with it.";

/// What was seen in the Sentinel logs when Sentinel promoted twice.
pub(super) const SENTINEL_AGAIN_NOTE: &str = "\
Sentinel promoting more than one replica: in the Sentinel logs of such runs (kept in the \
benchmark's artifacts), one sentinel marks the master it has just switched to (`+switch-master`) \
subjectively down about `down-after-milliseconds` later, although that master is up and taking \
writes, reaches `+odown` in the same millisecond (the other sentinels' votes about the crashed \
master still count), wins an election and fails the new master over as well. The first \
promoted replica then stays a master next to the second until Sentinel converts it, 8 s or more \
later (see the switchover note below): a plain client connected to it keeps writing there, and \
all of it is lost.";

/// What the switchover figures mean for Sentinel (its write gap alone would mislead).
pub(super) const SWITCHOVER_NOTE: &str = "\
How to read this: `SENTINEL FAILOVER` promotes a replica with `REPLICAOF NO ONE` while the old \
master keeps running as a master; Sentinel turns it into a replica only once it has reported \
itself as a master for 8 s (`SENTINEL_PUBLISH_PERIOD * 4` in sentinel.c), and until then a \
client connected to it keeps writing there. So Sentinel's *plain* write gap is short, but those \
writes are acknowledged by the old master and then discarded (*lost*); and the replica Sentinel \
did not promote acknowledges `WAIT 1` for the old master until it is pointed at the new one, so \
even `WAIT 1` does not protect every write. vigil's switchover pauses writes on the old master \
(`CLIENT PAUSE WRITE`), reads the target's offset until it has all of them, swaps the roles with \
`FAILOVER TO ... FORCE` (not waiting for the replica's once-a-second ack) and closes the old \
master's clients.";

/// What the rolling-update figures are.
pub(super) const ROLLING_NOTE: &str = "\
How to read this: a new pod spec (a new CPU request: the node runs only the images it imported) \
makes the operator replace the replicas one at a time, each in sync before the next, then hand the \
master role over with the same switchover as above and replace the old master last. The write \
gap is that handover; *spec change → ...* spans the whole roll (the replicas' replacement \
included).";

pub(super) const METHOD: &str = "\
- **Both systems, same client, same machine, same time.** For each detection timeout, a vigil \
`RedisReplication` (`instances: 3`, `failover.downAfterMilliseconds` = the timeout) and a Sentinel \
set run side by side; runs alternate vigil, Sentinel, vigil, ... so load from elsewhere hits \
both alike. Each run starts from a healthy set (every replica linked; vigil Ready with its 2 s \
failover cooldown passed; every sentinel naming the same master, knowing the other two sentinels \
and both replicas as healthy).
- **vigil**: the operator as the e2e tests run it (one `vigil operator` per namespace, the chart's \
RBAC, probe interval 1000 ms, failover cooldown 2 s), pods on the real node: the kubelet on \
containerd runs the server image built from `images/server` in its `SERVER=redis` variant \
(`vigil agent` supervising Debian's `redis-server`, the same as the Sentinel side's), clients \
through the operator's Sentinel endpoint (one endpoint).
- **Sentinel**: three `redis-sentinel` (`sentinel monitor bench <master> 6379 2`, the same \
`down-after-milliseconds`, `failover-timeout 10000` (Sentinel's default is 180000; it also \
bounds the leader election), `parallel-syncs 2`) watching three `redis-server` with vigil's \
redis.conf defaults (RDB with its save points, diskless sync without delay, `replica-announce-ip`). Auth \
as vigil: a password on the instances (`requirepass`/`masterauth`, `sentinel auth-pass`), none on \
the Sentinel endpoints. Each process has its own 10.245.x.y address on `lo`.
- **The crash**: SIGKILL of the master's process: vigil's pod container (every process of it, \
through the CRI, as the e2e chaos tests do), Sentinel's `redis-server`. vigil's is restarted by \
the kubelet, Sentinel's by a supervisor with the kubelet's crash back-off (the first restart at \
once; a later crash waits 10 s from the crash, doubling each restart). After each crash run the crashed instance gets a fresh restart history (vigil: its pod is deleted and \
recreated; Sentinel: the supervisor forgets the back-off), so every crash run is a first crash \
(the repeat crash's, a second: see its section). \
Neither comes back as a writable master on its own: vigil's agent boots it \
fenced until the operator decides; the Sentinel side's start script asks the sentinels for the \
master and starts as its replica, waiting while they still name the crashed instance (Sentinel \
deployments do this so that an empty restarted master is never synced from). So *every replica \
follows* includes the old master rejoining, for both.
- **The client**: redis-py's `Sentinel` (`master_for`, socket timeouts 0.5 s) in \
tests/clients/py-failover/failover.py, given all Sentinel endpoints; two writers per run, one \
plain (`SET`: acknowledged on `OK`) and one with `WAIT 1 1000` (acknowledged only when a replica \
has it); each writes every 10 ms and retries 20 ms after an error, stamping each line with \
`time.monotonic()`.
- **Write gap**: the last acknowledged write on the old master to the first acknowledged write on \
the new one, per writer. **First write**: crash (or request) to that first write. **The other \
replica follows / every replica follows**: crash (or request) until `INFO replication` (polled \
every 50 ms on each instance) shows that replica (every non-master, the old master included) \
with `master_host` the new master and `master_link_status:up`. **Lost**: acknowledged keys \
missing on the new master once the run is over. **Margin over downAfter** (freeze, partition: \
silence, which both must wait out): the plain writer's gap less the detection timeout, per run.
- **Switchover**: vigil is asked for the replica with the highest ordinal; `SENTINEL FAILOVER` \
picks its replica itself.
- Statistics: median and p90 are nearest-rank; ratios are vigil's median over Sentinel's.";

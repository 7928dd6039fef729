//! The command line of `kubectl vigil` and the dispatch to its verbs.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use super::{Connect, Error, Output, parse_duration};

#[derive(Parser, Debug)]
#[command(
    name = "kubectl-vigil",
    bin_name = "kubectl vigil",
    version,
    about = "Day-2 operations on vigil's RedisReplications"
)]
pub struct Cli {
    /// Namespace of the replication (default: the context's namespace).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Phase, conditions, every instance's role and replication, the last failover.
    Status {
        /// The RedisReplication.
        name: String,
        /// text (a summary), or the status itself as json or yaml.
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Make another instance the master without losing acknowledged writes.
    Switchover {
        /// The RedisReplication.
        name: String,
        /// The pod to promote (default: the best synced replica: greatest offset, then lowest
        /// ordinal).
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Take an instance (or every one) out of service: read-only, out of the Services, never
    /// promoted; its pod and data stay. A fenced master leaves the set without writes.
    Fence {
        /// The RedisReplication.
        name: String,
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Put a fenced instance (or every one) back into service.
    Unfence {
        /// The RedisReplication.
        name: String,
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Stop the set keeping its claims, Secrets and master (on), or wake it (off).
    Hibernate {
        /// The RedisReplication.
        name: String,
        #[arg(value_enum)]
        state: OnOff,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Restart every instance through the operator's rolling update (replicas one at a time,
    /// the master last after a switchover), or one instance.
    Restart {
        /// The RedisReplication.
        name: String,
        /// Only this instance (a master hands over first).
        pod: Option<String>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Back the set up to its `spec.backup` object store (a RedisBackup), showing progress.
    Backup {
        /// The RedisReplication.
        name: String,
        /// Name of the RedisBackup (default: <name>-<UTC time>).
        #[arg(long = "backup-name")]
        backup_name: Option<String>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Write a support bundle (.tar.gz): objects, Events, pod and operator logs; Secrets
    /// redacted.
    Report {
        /// The RedisReplication.
        name: String,
        /// Where to write it (default: vigil-report-<namespace>-<name>-<time>.tar.gz).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

/// One instance or every one.
#[derive(clap::Args, Debug)]
#[group(required = true, multiple = false)]
pub struct Target {
    /// The instance pod.
    pub pod: Option<String>,
    /// Every instance of the set.
    #[arg(long)]
    pub all: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

/// Every verb waits for its outcome unless told not to.
#[derive(clap::Args, Debug)]
pub struct WaitArgs {
    /// Wait for the outcome, showing progress on stderr (--wait=false: return once requested).
    #[arg(
        long,
        default_value_t = true,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub wait: bool,
    /// How long --wait waits (e.g. 90s, 2m).
    #[arg(long, value_parser = duration_arg, default_value = "5m")]
    pub timeout: Duration,
}

impl Target {
    /// The pod, or `None` for every instance.
    pub fn pod(&self) -> Option<&str> {
        self.pod.as_deref()
    }
}

impl WaitArgs {
    /// How long to wait, or `None` for not at all.
    pub fn deadline(&self) -> Option<Duration> {
        self.wait.then_some(self.timeout)
    }
}

fn duration_arg(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

impl Cli {
    fn connect(&self) -> Connect {
        Connect {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
            namespace: self.namespace.clone(),
        }
    }

    /// Runs the verb; what it prints goes to stdout, progress to stderr.
    pub async fn run(self) -> Result<(), Error> {
        let session = self.connect().session().await?;
        match self.command {
            Command::Status { name, output } => {
                let rr = session.replication(&name).await?;
                print!(
                    "{}",
                    super::status::render(&session.namespace, &rr, output)?
                );
                Ok(())
            }
            Command::Switchover { name, to, wait } => {
                let follow = match wait.wait {
                    true => Some(super::switchover::Follow::before(&session, &name).await?),
                    false => None,
                };
                let target = super::switchover::request(&session, &name, to.as_deref()).await?;
                match (follow, wait.deadline()) {
                    (Some(follow), Some(timeout)) => {
                        follow.wait(&session, &name, target, timeout).await
                    }
                    _ => Ok(()),
                }
            }
            Command::Fence { name, target, wait } => {
                super::fence::run(&session, &name, target.pod(), true, wait.deadline()).await
            }
            Command::Unfence { name, target, wait } => {
                super::fence::run(&session, &name, target.pod(), false, wait.deadline()).await
            }
            Command::Hibernate { name, state, wait } => {
                let on = state == OnOff::On;
                super::hibernate::run(&session, &name, on, wait.deadline()).await
            }
            Command::Restart { name, pod, wait } => {
                super::restart::run(&session, &name, pod.as_deref(), wait.deadline()).await
            }
            Command::Backup {
                name,
                backup_name,
                wait,
            } => {
                let backup =
                    super::backup::request(&session, &name, backup_name.as_deref()).await?;
                match wait.deadline() {
                    Some(timeout) => super::backup::wait(&session, &backup, timeout).await,
                    None => Ok(()),
                }
            }
            Command::Report { name, output } => {
                let path = super::report::write(&session, &name, output).await?;
                println!("{}", path.display());
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn kubectl_flags_go_anywhere() {
        let cli = Cli::try_parse_from([
            "kubectl-vigil",
            "switchover",
            "cache",
            "-n",
            "demo",
            "--to",
            "cache-2",
            "--wait",
            "--timeout",
            "30s",
        ])
        .expect("parses");
        assert_eq!(cli.namespace.as_deref(), Some("demo"));
        match cli.command {
            Command::Switchover { to, wait, .. } => {
                assert_eq!(to.as_deref(), Some("cache-2"));
                assert_eq!(wait.deadline(), Some(Duration::from_secs(30)));
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["kubectl-vigil", "status", "cache", "-o", "xml"]).is_err());
    }

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        Cli::try_parse_from(std::iter::once("kubectl-vigil").chain(args.iter().copied()))
            .map(|c| c.command)
    }

    #[test]
    fn every_verb_waits_unless_told_not_to() {
        for args in [
            &["fence", "cache", "cache-1"][..],
            &["unfence", "cache", "--all"],
            &["hibernate", "cache", "on"],
            &["restart", "cache"],
            &["switchover", "cache"],
        ] {
            let wait = match parse(args).expect("parses") {
                Command::Fence { wait, .. }
                | Command::Unfence { wait, .. }
                | Command::Hibernate { wait, .. }
                | Command::Restart { wait, .. }
                | Command::Switchover { wait, .. } => wait,
                other => panic!("{other:?}"),
            };
            assert_eq!(wait.deadline(), Some(Duration::from_secs(300)), "{args:?}");
        }
        match parse(&["restart", "cache", "cache-2", "--wait=false"]).expect("parses") {
            Command::Restart { pod, wait, .. } => {
                assert_eq!(pod.as_deref(), Some("cache-2"));
                assert_eq!(wait.deadline(), None);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn fencing_takes_one_pod_or_all() {
        match parse(&["fence", "cache", "--all"]).expect("parses") {
            Command::Fence { target, .. } => assert_eq!(target.pod(), None),
            other => panic!("{other:?}"),
        }
        for bad in [
            &["fence", "cache"][..],
            &["fence", "cache", "cache-1", "--all"],
            &["unfence", "cache"],
            &["hibernate", "cache", "maybe"],
            &["hibernate", "cache"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}

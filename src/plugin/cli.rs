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
        /// Wait until the target is master, showing progress.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits (e.g. 90s, 2m).
        #[arg(long, value_parser = duration_arg, default_value = "2m")]
        timeout: Duration,
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
            Command::Switchover {
                name,
                to,
                wait,
                timeout,
            } => {
                let seen = match wait {
                    true => Some(super::wait::seen_events(&session, &name).await?),
                    false => None,
                };
                let target = super::switchover::request(&session, &name, to.as_deref()).await?;
                println!("redisreplication/{name}: switchover to {target} requested");
                match seen {
                    Some(seen) => {
                        super::wait::switchover(&session, &name, &target, timeout, seen).await
                    }
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
            Command::Switchover {
                to, wait, timeout, ..
            } => {
                assert_eq!(to.as_deref(), Some("cache-2"));
                assert!(wait);
                assert_eq!(timeout, Duration::from_secs(30));
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["kubectl-vigil", "status", "cache", "-o", "xml"]).is_err());
    }
}

//! `kubectl-vigil`: the kubectl plugin (`kubectl vigil status | switchover | fence | unfence |
//! hibernate | restart | report`). Install with `cargo install --path . --bin kubectl-vigil` or
//! Krew (`plugins/vigil.yaml`); the verbs live in `vigil::plugin`.

use std::process::ExitCode;

use clap::Parser;
use vigil::plugin::cli::Cli;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.run().await.map_err(anyhow::Error::from) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The plugin's errors already name their cause: the chain would repeat it.
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

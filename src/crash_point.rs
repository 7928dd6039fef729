//! Crash points for the end-to-end tests of safety rule 5 (an operator that dies mid-failover
//! resumes or rolls back on restart). Built with the `crash-points` feature (only the e2e tests
//! enable it), the operator aborts at the step named by `VIGIL_CRASH_AT`, as if killed exactly
//! there. Without the feature this is a no-op.

/// Aborts the process if this build has crash points and `VIGIL_CRASH_AT` names `step`.
pub fn crash_point(step: &str) {
    #[cfg(feature = "crash-points")]
    if std::env::var("VIGIL_CRASH_AT").is_ok_and(|at| at == step) {
        tracing::error!(step, "crash point reached; aborting");
        std::process::abort();
    }
    #[cfg(not(feature = "crash-points"))]
    let _ = step;
}

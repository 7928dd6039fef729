//! Probe settings and the threshold state machine, as Kubernetes defines them.
//!
//! A probe's *result* only changes after `successThreshold` consecutive successes or
//! `failureThreshold` consecutive failures. Initial results: readiness starts as failure (not
//! ready until proven), liveness as success (alive until proven dead), startup as unknown (not
//! started). Liveness and readiness do not run until the startup probe (if any) has succeeded.

use std::time::Duration;

use k8s_openapi::api::core::v1::Probe;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Startup,
    Readiness,
    Liveness,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Startup => "startup",
            Kind::Readiness => "readiness",
            Kind::Liveness => "liveness",
        }
    }
}

/// Timing of a probe with Kubernetes defaults applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
    /// Probe-level override of the pod's termination grace period for liveness/startup kills.
    pub termination_grace: Option<Duration>,
}

impl Settings {
    pub fn from_probe(kind: Kind, probe: &Probe) -> Self {
        let secs = |v: Option<i32>, default: i32, min: i32| {
            Duration::from_secs(v.unwrap_or(default).max(min) as u64)
        };
        // Liveness and startup must use successThreshold 1 (the API enforces it).
        let success_threshold = match kind {
            Kind::Readiness => probe.success_threshold.unwrap_or(1).max(1) as u32,
            Kind::Liveness | Kind::Startup => 1,
        };
        Settings {
            initial_delay: secs(probe.initial_delay_seconds, 0, 0),
            period: secs(probe.period_seconds, 10, 1),
            timeout: secs(probe.timeout_seconds, 1, 1),
            success_threshold,
            failure_threshold: probe.failure_threshold.unwrap_or(3).max(1) as u32,
            termination_grace: probe
                .termination_grace_period_seconds
                .map(|s| Duration::from_secs(s.max(0) as u64)),
        }
    }
}

/// Consecutive-result counting that turns raw probe outcomes into a probe result.
#[derive(Clone, Debug, PartialEq)]
pub struct Tracker {
    success_threshold: u32,
    failure_threshold: u32,
    last: Option<bool>,
    run: u32,
    result: Option<bool>,
}

impl Tracker {
    pub fn new(kind: Kind, settings: &Settings) -> Self {
        Tracker {
            success_threshold: settings.success_threshold,
            failure_threshold: settings.failure_threshold,
            last: None,
            run: 0,
            result: match kind {
                Kind::Readiness => Some(false),
                Kind::Liveness => Some(true),
                Kind::Startup => None,
            },
        }
    }

    /// The current result (`None`: unknown yet).
    #[cfg(test)]
    pub fn result(&self) -> Option<bool> {
        self.result
    }

    /// Feeds one probe outcome; returns the new result when it changed.
    pub fn observe(&mut self, ok: bool) -> Option<bool> {
        if self.last == Some(ok) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(ok);
            self.run = 1;
        }
        let threshold = if ok {
            self.success_threshold
        } else {
            self.failure_threshold
        };
        if self.run < threshold || self.result == Some(ok) {
            return None;
        }
        self.result = Some(ok);
        Some(ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(kind: Kind, success: i32, failure: i32) -> Settings {
        Settings::from_probe(
            kind,
            &Probe {
                success_threshold: Some(success),
                failure_threshold: Some(failure),
                ..Default::default()
            },
        )
    }

    #[test]
    fn defaults() {
        let s = Settings::from_probe(Kind::Readiness, &Probe::default());
        assert_eq!(s.period, Duration::from_secs(10));
        assert_eq!(s.timeout, Duration::from_secs(1));
        assert_eq!((s.success_threshold, s.failure_threshold), (1, 3));
        assert_eq!(s.initial_delay, Duration::ZERO);
        // Liveness ignores successThreshold.
        assert_eq!(settings(Kind::Liveness, 5, 3).success_threshold, 1);
    }

    /// Feeds `steps` (outcome, expected change) to `t` in order.
    #[track_caller]
    fn feed(t: &mut Tracker, steps: &[(bool, Option<bool>)]) {
        for (i, &(ok, change)) in steps.iter().enumerate() {
            assert_eq!(t.observe(ok), change, "step {i}: observe({ok})");
        }
    }

    #[test]
    fn readiness_needs_consecutive_successes_and_failures() {
        let mut t = Tracker::new(Kind::Readiness, &settings(Kind::Readiness, 2, 3));
        assert_eq!(t.result(), Some(false));
        feed(
            &mut t,
            &[
                (true, None),
                (false, None),
                (true, None),
                (true, Some(true)),
                (true, None),
                (false, None),
                (false, None),
                // a success resets the failure run
                (true, None),
                (false, None),
                (false, None),
                (false, Some(false)),
            ],
        );
        assert_eq!(t.result(), Some(false));
    }

    #[test]
    fn liveness_fails_after_threshold() {
        let mut t = Tracker::new(Kind::Liveness, &settings(Kind::Liveness, 1, 2));
        assert_eq!(t.result(), Some(true));
        feed(&mut t, &[(true, None), (false, None), (false, Some(false))]);
    }

    #[test]
    fn startup_starts_unknown() {
        let mut t = Tracker::new(Kind::Startup, &settings(Kind::Startup, 1, 3));
        assert_eq!(t.result(), None);
        feed(&mut t, &[(false, None), (true, Some(true))]);
    }
}

//! vigil: a Kubernetes operator that runs Redis/Valkey master/replica sets and does Sentinel's job
//! itself. See DESIGN.md for the picture; each module here has one job.

pub mod agent;
pub mod api;
pub mod backup;
pub mod controller;
pub mod crash_point;
pub mod discovery;
pub mod isolation;
pub mod labels;
pub mod leader;
pub mod metrics;
pub mod monitor;
pub mod plugin;
pub mod redis;
pub mod redis_conf;
pub mod resources;
pub mod telemetry;
pub mod tls;

//! dm-patch: hot-fix a running TiDB Data Migration (DM) cluster, safely.
//!
//! Data flows one way: argv -> `Cli` -> a resolved, validated config -> `Plan` -> execution ->
//! `Report` -> terminal or JSON.

pub mod ssh;

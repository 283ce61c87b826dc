//! dm-sandbox: a DM cluster on real OpenSSH hosts, on one machine (see README.md).
//!
//! ```no_run
//! use dm_sandbox::Sandbox;
//! let sandbox = Sandbox::builder().hosts(5).masters(3).workers(3).sources(2).start()?;
//! let output = sandbox.ssh(&sandbox.hosts()[0], "systemctl is-active dm-master-8261");
//! # anyhow::Ok(())
//! ```

pub mod bins;
mod builder;
pub mod claim;
mod cluster;
pub mod deploy;
pub mod dm_api;
pub mod fault;
mod harness;
pub mod host;
pub mod jump;
pub mod machine;
pub mod package;
pub mod process;
mod services;
mod sources;
pub mod state;
pub mod sudo;
pub mod task_api;
pub mod tls;
pub mod topology;
pub mod units;
pub mod wait;

pub use builder::SandboxBuilder;
pub use fault::Fault;
pub use harness::{KEEP_VAR, Sandbox};
pub use host::SSH_PORT;
pub use jump::JumpHost;
pub use topology::Instance;

//! SSH to the cluster hosts: one connection per host, reused for every command and transfer.
//!
//! - [`session`]: connecting, authenticating with the cluster key, checking the host key.
//! - [`known_hosts`]: the OpenSSH-format file host keys are checked against.
//! - [`exec`]: running commands (as root, through sudo, or as a systemd user), streaming their
//!   input (a package goes to a host as a command's stdin), reading their output.
//! - [`quote`]: the one way values get into a remote command line.

mod error;
mod exec;
pub mod known_hosts;
mod quote;
mod session;

pub use error::SshError;
pub use exec::{ExecOutput, Privilege};
pub use quote::shell_quote;
pub use session::{HostKeyPolicy, HostSession, SshTarget};

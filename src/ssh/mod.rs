//! Reaching the cluster hosts: one connection per host, reused for every command and transfer.
//!
//! - [`session`]: connecting the way the cluster says (dm-patch's own client, directly or
//!   through a jump host; the system's OpenSSH client; this machine), checking host keys,
//!   logging in with the cluster key.
//! - [`known_hosts`]: the OpenSSH-format file host keys are checked against.
//! - [`exec`]: running commands (as root, through sudo, or as a systemd user), streaming their
//!   input (a package goes to a host as a command's stdin), reading their output; [`converse`]:
//!   a command spoken with line by line while it runs.
//! - [`system`], [`local`], [`child`]: the system's `ssh` client and `--ssh none`.
//! - [`reach`], [`jump`], [`tunnel`]: the executor, and TiUP's jump host, for SSH and for the
//!   DM API.
//! - [`redial`]: connecting again when a host's connection was lost between commands.
//! - [`paced`]: backpressure from the socket for streamed input, so memory stays flat.
//! - [`quote`]: the one way values get into a remote command line.

mod child;
mod converse;
mod error;
mod exec;
mod jump;
pub mod known_hosts;
mod local;
mod paced;
mod quote;
mod reach;
mod redial;
mod session;
mod system;
mod tunnel;

pub use converse::Conversation;
pub use error::SshError;
pub use exec::{ExecOutput, Privilege};
pub use jump::JumpHost;
pub use local::is_this_machine;
pub use quote::shell_quote;
pub use reach::{Executor, Reach};
pub use session::{HostKeyPolicy, HostSession, SshTarget, Transport};
pub use system::{OpenSsh, SSH_PATH_ENV};
pub use tunnel::HttpTunnel;

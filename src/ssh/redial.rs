//! dm-patch's own SSH connection to a host, made again when it was lost between commands.
//!
//! A roll of many instances can outlast a host's connection: sshd restarted by configuration
//! management, a network blip longer than the keepalives allow, a firewall dropping an idle
//! flow. A command whose channel cannot be opened on a lost connection never ran, so it is
//! safe to run it on a new one; the new connection checks the host key and logs in exactly as
//! the first did. A command that was running when the connection broke is not retried: what it
//! did is unknown, and the caller's own handling (undo, report) decides.

use std::sync::{Arc, Mutex, PoisonError};

use russh::client::Handle;
use russh::{Channel, Disconnect, client};

use super::SshError;
use super::paced::Written;
use super::session::{HostKeyCheck, SshTarget, connect_builtin};

/// How long letting a connection go waits for its session to end (a polite server ends it at
/// once; one that does not is left to close on its own).
const PARK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// One live connection and what it has written to its socket (for [`super::paced`]).
pub(super) struct Connection {
    pub(super) handle: Handle<HostKeyCheck>,
    pub(super) written: Arc<Written>,
}

/// A host's connection, with what is needed to make it again.
pub(super) struct Redial {
    target: SshTarget,
    /// `None` while parked (or not made yet): the next command makes it.
    current: Mutex<Option<Arc<Connection>>>,
    /// Made at the first command, and so let go between commands when asked.
    parks: bool,
    /// One reconnection at a time: callers that find the same lost connection wait for it and
    /// share its result.
    dialing: tokio::sync::Mutex<()>,
}

impl Redial {
    /// `first`: the connection made to log in, or `None` to log in at the first command.
    pub(super) fn new(target: SshTarget, first: Option<Connection>) -> Redial {
        Redial {
            target,
            parks: first.is_none(),
            current: Mutex::new(first.map(Arc::new)),
            dialing: tokio::sync::Mutex::new(()),
        }
    }

    /// The connection as it is now: possibly lost (see [`Redial::live`]), `None` while parked.
    pub(super) fn current(&self) -> Option<Arc<Connection>> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Lets the connection go until the next command, if it was made at the first one (see
    /// [`Redial::new`]). With no command running on it (its host idle), it is closed when this
    /// returns; otherwise once the last one is done.
    pub(super) async fn park(&self) {
        if !self.parks {
            return;
        }
        let parked = self.current.lock().unwrap_or_else(PoisonError::into_inner).take();
        let Some(connection) = parked else { return };
        tracing::debug!("{}: connection parked", self.target.endpoint());
        if let Ok(Connection { handle, .. }) = Arc::try_unwrap(connection) {
            if let Err(err) = handle.disconnect(Disconnect::ByApplication, "", "en").await {
                tracing::debug!("{}: disconnect: {err}", self.target.endpoint());
            }
            // The handle resolves once its session has ended, and its socket is closed.
            if tokio::time::timeout(PARK_WAIT, handle).await.is_err() {
                tracing::debug!("{}: the session did not end at once", self.target.endpoint());
            }
        }
    }

    /// A channel on a live connection: on the current one, or, if that was lost, on a new one.
    /// Returns the connection the channel belongs to.
    pub(super) async fn open(
        &self,
        kind: ChannelKind<'_>,
    ) -> Result<(Channel<client::Msg>, Arc<Connection>), OpenError> {
        let connection = self.live().await?;
        match kind.open_on(&connection.handle).await {
            Ok(channel) => Ok((channel, connection)),
            // Lost since its last use (the session's end may not have been seen yet): nothing
            // ran on it, so the channel is opened again, on a new connection.
            Err(err) if connection.handle.is_closed() || is_lost(&err) => {
                let fresh = self.replace(Some(&connection)).await?;
                let channel = kind.open_on(&fresh.handle).await?;
                Ok((channel, fresh))
            }
            Err(err) => Err(err.into()),
        }
    }

    /// A live connection: the current one, or, if that was lost or parked, a new one.
    async fn live(&self) -> Result<Arc<Connection>, SshError> {
        match self.current() {
            Some(connection) if !connection.handle.is_closed() => Ok(connection),
            current => self.replace(current.as_ref()).await,
        }
    }

    /// Connects again in place of `lost` (`None`: parked), unless another caller already has.
    async fn replace(&self, lost: Option<&Arc<Connection>>) -> Result<Arc<Connection>, SshError> {
        let _dialing = self.dialing.lock().await;
        let current = self.current();
        match (&current, lost) {
            (Some(current), Some(lost)) if !Arc::ptr_eq(current, lost) => {
                return Ok(current.clone());
            }
            (Some(current), None) => return Ok(current.clone()),
            (_, Some(_)) => tracing::warn!(
                "{}: the SSH connection was lost; connecting again",
                self.target.endpoint()
            ),
            (None, None) => tracing::debug!("{}: connecting", self.target.endpoint()),
        }
        // Boxed: through a jump host, connecting opens a channel on the jump host's own
        // connection, which may have to be made again in turn.
        let (handle, written) = Box::pin(connect_builtin(&self.target)).await?;
        let fresh = Arc::new(Connection { handle, written });
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(fresh.clone());
        Ok(fresh)
    }
}

/// What opening a channel on a connection that is gone fails with: the request could not be
/// sent, or the session ended before it was answered (a refusal by the server is
/// `ChannelOpenFailure`).
fn is_lost(err: &russh::Error) -> bool {
    matches!(err, russh::Error::SendError | russh::Error::Disconnect)
}

/// The channels dm-patch opens.
#[derive(Debug, Clone, Copy)]
pub(super) enum ChannelKind<'a> {
    /// For a command.
    Session,
    /// A TCP connection made by the host (a jump host's `direct-tcpip`).
    DirectTcpip { host: &'a str, port: u16 },
}

impl ChannelKind<'_> {
    async fn open_on(
        self,
        handle: &Handle<HostKeyCheck>,
    ) -> Result<Channel<client::Msg>, russh::Error> {
        match self {
            ChannelKind::Session => handle.channel_open_session().await,
            ChannelKind::DirectTcpip { host, port } => {
                handle.channel_open_direct_tcpip(host, u32::from(port), "127.0.0.1", 0).await
            }
        }
    }
}

/// Why no channel could be opened: no connection could be made, or the server refused it.
#[derive(Debug)]
pub(super) enum OpenError {
    Connect(SshError),
    Channel(russh::Error),
}

impl From<SshError> for OpenError {
    fn from(err: SshError) -> Self {
        OpenError::Connect(err)
    }
}

impl From<russh::Error> for OpenError {
    fn from(err: russh::Error) -> Self {
        OpenError::Channel(err)
    }
}

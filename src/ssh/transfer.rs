//! Uploads over SFTP: streamed from disk in large writes, many of them in flight at once, into
//! `<remote>.part`, renamed over `<remote>` only when complete.
//!
//! One SFTP subsystem channel per session, opened on first use. Memory stays bounded by the
//! writes in flight (`WRITES_IN_FLIGHT` x the write size, a few MiB) whatever the file size.

use std::path::Path;
use std::sync::Arc;

use russh_sftp::client::RawSftpSession;
use russh_sftp::client::rawsession::Limits;
use russh_sftp::protocol::{FileAttributes, OpenFlags, Packet, StatusCode};
use tokio::io::AsyncReadExt;
use tokio::task::JoinSet;

use super::error::UploadError;
use super::{HostSession, SshError};

/// Writes awaiting the server's acknowledgement. Enough to keep the server's channel window
/// full on a fast link and its disk writer busy; see `scripts/bench-upload`.
const WRITES_IN_FLIGHT: usize = 32;
/// The largest write we send. OpenSSH announces 255 KiB through `limits@openssh.com`.
const MAX_WRITE_LEN: u64 = 256 * 1024;
/// Without the limits extension, stay at the size every SFTP server accepts.
const FALLBACK_WRITE_LEN: u64 = 32 * 1024;
/// SSH_FXP_WRITE framing: length, type, id, handle length, offset, data length.
const WRITE_OVERHEAD: u64 = 4 + 1 + 4 + 4 + 8 + 4;
/// Per request. Generous, because a write's clock starts when it is queued behind the others.
const REQUEST_TIMEOUT_SECS: u64 = 120;
const POSIX_RENAME: &str = "posix-rename@openssh.com";

/// An open SFTP subsystem and what the server allows on it.
pub(super) struct Sftp {
    raw: Arc<RawSftpSession>,
    write_len: usize,
    /// Whether the server can rename over an existing file in one step.
    posix_rename: bool,
}

impl Sftp {
    async fn start(session: &HostSession) -> Result<Sftp, UploadError> {
        let channel =
            session.inner.handle.channel_open_session().await.map_err(UploadError::Channel)?;
        channel.request_subsystem(true, "sftp").await.map_err(UploadError::Subsystem)?;
        let mut raw = RawSftpSession::new(channel.into_stream());
        raw.set_timeout(REQUEST_TIMEOUT_SECS);
        let version = raw.init().await.map_err(UploadError::Init)?;
        let supports = |name: &str, revision: &str| {
            version.extensions.get(name).is_some_and(|r| r == revision)
        };

        let mut write_len = FALLBACK_WRITE_LEN;
        if supports(russh_sftp::extensions::LIMITS, "1") {
            let limits = Limits::from(raw.limits().await.map_err(UploadError::Limits)?);
            let by_packet = limits.packet_len.map(|len| len.saturating_sub(WRITE_OVERHEAD + 256));
            write_len = [Some(MAX_WRITE_LEN), limits.write_len, by_packet]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(FALLBACK_WRITE_LEN);
            raw.set_limits(limits);
        }
        Ok(Sftp {
            raw: Arc::new(raw),
            write_len: write_len as usize,
            posix_rename: supports(POSIX_RENAME, "1"),
        })
    }

    pub(super) fn close(&self) {
        self.raw.close_session().ok();
    }

    /// Streams `local` into the remote file `path`, calling `progress` with the bytes the
    /// server has acknowledged so far.
    async fn write_file(
        &self,
        local: &mut tokio::fs::File,
        path: &str,
        progress: &(impl Fn(u64) + Send + Sync),
    ) -> Result<(), UploadError> {
        let flags = OpenFlags::CREATE | OpenFlags::TRUNCATE | OpenFlags::WRITE;
        let handle = self
            .raw
            .open(path, flags, FileAttributes::empty())
            .await
            .map_err(|source| UploadError::Create { path: path.to_owned(), source })?
            .handle;
        let written = self.write_all(local, &handle, progress).await;
        // Close even after a failed write, so the server lets go of the handle.
        let closed = self.raw.close(handle).await;
        written?;
        closed.map_err(|source| UploadError::Close { path: path.to_owned(), source })?;
        Ok(())
    }

    async fn write_all(
        &self,
        local: &mut tokio::fs::File,
        handle: &str,
        progress: &(impl Fn(u64) + Send + Sync),
    ) -> Result<(), UploadError> {
        let mut in_flight = JoinSet::new();
        let mut offset = 0u64;
        let mut acknowledged = 0u64;
        loop {
            let chunk = read_chunk(local, self.write_len).await.map_err(UploadError::ReadLocal)?;
            if chunk.is_empty() {
                break;
            }
            let len = chunk.len() as u64;
            let (raw, handle) = (self.raw.clone(), handle.to_owned());
            in_flight.spawn(async move { raw.write(handle, offset, chunk).await.map(|_| len) });
            offset += len;
            if in_flight.len() >= WRITES_IN_FLIGHT {
                acknowledged += next_ack(&mut in_flight).await?;
                progress(acknowledged);
            }
        }
        while !in_flight.is_empty() {
            acknowledged += next_ack(&mut in_flight).await?;
            progress(acknowledged);
        }
        Ok(())
    }

    /// Moves `from` over `to` in one step where the server can (`posix-rename`); otherwise
    /// removes `to` first, since plain SFTP rename refuses to replace a file.
    async fn rename_over(&self, from: &str, to: &str) -> Result<(), UploadError> {
        let failed = |source: russh_sftp::client::error::Error| UploadError::Rename {
            from: from.to_owned(),
            to: to.to_owned(),
            source,
        };
        if !self.posix_rename {
            self.raw.remove(to).await.ok();
            return self.raw.rename(from, to).await.map(drop).map_err(failed);
        }
        let mut request = Vec::with_capacity(8 + from.len() + to.len());
        for path in [from, to] {
            request.extend_from_slice(&(path.len() as u32).to_be_bytes());
            request.extend_from_slice(path.as_bytes());
        }
        match self.raw.extended(POSIX_RENAME, request).await.map_err(failed)? {
            Packet::Status(status) if status.status_code == StatusCode::Ok => Ok(()),
            Packet::Status(status) => Err(failed(status.into())),
            other => Err(UploadError::UnexpectedReply {
                from: from.to_owned(),
                to: to.to_owned(),
                reply: format!("{other:?}"),
            }),
        }
    }
}

/// Waits for one write to be acknowledged and returns its length.
async fn next_ack(
    in_flight: &mut JoinSet<Result<u64, russh_sftp::client::error::Error>>,
) -> Result<u64, UploadError> {
    match in_flight.join_next().await {
        Some(Ok(Ok(len))) => Ok(len),
        Some(Ok(Err(err))) => Err(UploadError::WriteRefused(err)),
        Some(Err(join)) => Err(UploadError::WriteTask(join)),
        None => Ok(0),
    }
}

/// Reads up to `len` bytes, fewer only at the end of the file.
async fn read_chunk(file: &mut tokio::fs::File, len: usize) -> std::io::Result<Vec<u8>> {
    let mut chunk = Vec::with_capacity(len);
    while chunk.len() < len {
        let read = (&mut *file).take((len - chunk.len()) as u64).read_buf(&mut chunk).await?;
        if read == 0 {
            break;
        }
    }
    Ok(chunk)
}

impl HostSession {
    /// Uploads `local` to `remote` as the SSH user (never through sudo: the caller picks a
    /// directory that user can write). The data goes to `<remote>.part` first and is renamed
    /// over `remote` once complete, so nobody ever sees a partial file at `remote`; on failure
    /// the `.part` file is removed.
    ///
    /// `progress` is called with the number of bytes the host has acknowledged so far.
    pub async fn upload(
        &self,
        local: &Path,
        remote: &str,
        progress: impl Fn(u64) + Send + Sync,
    ) -> Result<(), SshError> {
        let mut file = tokio::fs::File::open(local)
            .await
            .map_err(|source| SshError::LocalFile { path: local.to_owned(), source })?;
        let failed = |source: UploadError| SshError::Upload {
            endpoint: self.inner.endpoint.clone(),
            remote: remote.to_owned(),
            source: Box::new(source),
        };
        let sftp = self.inner.sftp.get_or_try_init(|| Sftp::start(self)).await.map_err(failed)?;

        let part = format!("{remote}.part");
        let result = match sftp.write_file(&mut file, &part, &progress).await {
            Ok(()) => sftp.rename_over(&part, remote).await,
            Err(err) => Err(err),
        };
        if result.is_err() {
            sftp.raw.remove(part.as_str()).await.ok();
        }
        result.map_err(failed)
    }
}

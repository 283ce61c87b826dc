//! How a checked package travels to the hosts: as the gzip file it is, or as the tar stream
//! inside it, unpacked here while it is sent.
//!
//! A host unpacks a gzip package with `tar -xzf`, that is through `gzip -d`: one core at about
//! 180 MB/s of output (about 1.4 Gbit/s), and (where hosts share machines, as VMs or
//! containers do) CPU taken from the services beside them. Gzip on the wire pays only where the
//! link is slower than that: the tar stream arrives as fast as the link carries it, and the
//! host only writes it. DM's hardware recommendations give a production dm-worker host a
//! 10 Gigabit NIC and a dm-master host a Gigabit one, so by default a dm-worker package goes as
//! tar, and a dm-master package goes gzipped when gzip makes it at least a tenth smaller (a
//! package gzip cannot shrink goes as tar either way). `--wire` overrides it: `gzip` for hosts
//! behind a slow link (another site, a WAN), `tar` for a fast one.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;

use super::gzip::Members;
use super::{KeptTar, MAX_UNPACKED, Package};
use crate::topology::Role;

/// The form a package's bytes take on their way to a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Wire {
    /// The package file itself; each host runs `tar -xzf -`.
    Gzip,
    /// The tar stream inside the package, unpacked here; each host runs `tar -xf -`.
    Tar,
}

impl Wire {
    /// The flags of the host's `tar` for this form (after `-x`).
    pub fn tar_flags(self) -> &'static str {
        match self {
            Wire::Gzip => "-xzf",
            Wire::Tar => "-xf",
        }
    }
}

impl Package {
    /// The form that costs the hosts' links and CPUs least, as DM's recommended hardware has
    /// them (see the module's doc): tar for a dm-worker; for a dm-master, gzip when it makes the
    /// package at least a tenth smaller than its tar stream.
    pub fn default_wire(&self) -> Wire {
        let gzip_saves = self.size.saturating_mul(10) < self.tar_size.saturating_mul(9);
        match self.component {
            Role::Master if gzip_saves => Wire::Gzip,
            _ => Wire::Tar,
        }
    }

    /// How many bytes go to each host in `wire`'s form.
    pub fn wire_size(&self, wire: Wire) -> u64 {
        match wire {
            Wire::Gzip => self.size,
            Wire::Tar => self.tar_size,
        }
    }

    /// The package's bytes in `wire`'s form. Memory stays at a few chunks whatever the
    /// package's size: the tar stream is read (from where the check kept it, else unpacked
    /// again) on a blocking thread only as fast as it is sent. A kept stream is the one checked;
    /// otherwise a package changed since its check fails to read, or reaches the host different
    /// and is caught there by the sha256 of what was unpacked.
    pub async fn open_for_wire(&self, wire: Wire) -> io::Result<Box<dyn AsyncRead + Send + Unpin>> {
        Ok(match wire {
            Wire::Gzip => Box::new(tokio::fs::File::open(&self.path).await?),
            Wire::Tar => Box::new(match self.kept_tar.as_ref().and_then(KeptTar::reader) {
                Some(kept) => TarStream::start(kept),
                None => TarStream::open(&self.path)?,
            }),
        })
    }
}

/// The size of the chunks the tar stream is unpacked in: one SSH packet.
const CHUNK: usize = 32 * 1024;

/// Chunks unpacked ahead of the sender, per host.
const AHEAD: usize = 4;

/// The tar stream inside a gzip package, unpacked on a blocking thread as it is read.
struct TarStream {
    chunks: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
    /// The end was reached: every read from now on says so.
    ended: bool,
}

impl TarStream {
    /// The stream, unpacked from the package file.
    fn open(path: &Path) -> io::Result<TarStream> {
        let file = File::open(path)?;
        Ok(Self::start(Members::new(BufReader::with_capacity(CHUNK, file), MAX_UNPACKED)))
    }

    /// The stream `source` reads, on a blocking thread.
    fn start(mut source: impl Read + Send + 'static) -> TarStream {
        let (sender, chunks) = mpsc::channel(AHEAD);
        tokio::task::spawn_blocking(move || {
            loop {
                let chunk = read_chunk(&mut source);
                let end = matches!(&chunk, Ok(bytes) if bytes.is_empty()) || chunk.is_err();
                // The reader is gone (the command ended early): nothing is waiting for more.
                if sender.blocking_send(chunk).is_err() || end {
                    return;
                }
            }
        });
        TarStream { chunks, current: Bytes::new(), ended: false }
    }
}

/// The next chunk of the stream (empty at its end).
fn read_chunk(source: &mut impl Read) -> io::Result<Bytes> {
    let mut chunk = BytesMut::zeroed(CHUNK);
    let filled = super::read_fully(source, &mut chunk)?;
    chunk.truncate(filled);
    Ok(chunk.freeze())
}

impl AsyncRead for TarStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.current.is_empty() && !self.ended {
            match ready!(self.chunks.poll_recv(cx)) {
                Some(Ok(chunk)) if chunk.is_empty() => self.ended = true,
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(err)) => return Poll::Ready(Err(err)),
                None => {
                    return Poll::Ready(Err(io::Error::other("the package stopped unpacking")));
                }
            }
        }
        let n = buf.remaining().min(self.current.len());
        buf.put_slice(&self.current[..n]);
        self.current.advance(n);
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::path::PathBuf;

    use tokio::io::AsyncReadExt;

    use super::*;

    fn gzip(data: &[u8], level: u32) -> Vec<u8> {
        let mut encoder =
            flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    /// A package of `data` as `dm-worker/dm-worker`, checked (its tar stream not kept).
    fn package(dir: &Path, data: &[u8], level: u32) -> Package {
        package_of(Role::Worker, dir, data, level)
    }

    /// A package of `data` as `<role>/<role>`, checked (its tar stream not kept).
    fn package_of(role: Role, dir: &Path, data: &[u8], level: u32) -> Package {
        super::super::inspect(&write_package(role, dir, data, level), role, &[], None).unwrap()
    }

    /// A package file of `data` as `<role>/<role>`.
    fn write_package(role: Role, dir: &Path, data: &[u8], level: u32) -> PathBuf {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o755);
        let mut builder = tar::Builder::new(Vec::new());
        builder.append_data(&mut header, format!("{role}/{role}"), data).unwrap();
        let path = dir.join(format!("{role}.tar.gz"));
        std::fs::write(&path, gzip(&builder.into_inner().unwrap(), level)).unwrap();
        path
    }

    async fn read_all(package: &Package, wire: Wire) -> io::Result<Vec<u8>> {
        let mut sent = Vec::new();
        package.open_for_wire(wire).await?.read_to_end(&mut sent).await?;
        Ok(sent)
    }

    fn gunzip(path: &Path) -> Vec<u8> {
        let mut unpacked = Vec::new();
        let gz = std::fs::read(path).unwrap();
        flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut unpacked).unwrap();
        unpacked
    }

    fn noise(len: usize) -> Vec<u8> {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    #[test]
    fn a_dm_master_package_that_gzip_shrinks_goes_gzipped_and_nothing_else_does() {
        let dir = tempfile::tempdir().unwrap();
        let text = b"a binary that compresses well ".repeat(10_000);
        let master = package_of(Role::Master, dir.path(), &text, 6);
        assert_eq!(master.default_wire(), Wire::Gzip, "a Gigabit host: bytes cost most");
        assert_eq!(master.wire_size(Wire::Gzip), master.size);
        let worker = package(dir.path(), &text, 6);
        assert_eq!(worker.default_wire(), Wire::Tar, "a 10 Gigabit host: its gzip -d costs most");
        let random = package_of(Role::Master, dir.path(), &noise(1 << 20), 6);
        assert_eq!(random.default_wire(), Wire::Tar, "gzip saves nothing");
        assert_eq!(random.wire_size(Wire::Tar), random.tar_size);
        assert!(random.tar_size > 1 << 20, "headers and padding count too");
    }

    #[tokio::test]
    async fn the_tar_stream_is_exactly_what_gzip_d_gives() {
        let dir = tempfile::tempdir().unwrap();
        let package = package(dir.path(), &noise(300_000), 1);
        let mut stream = package.open_for_wire(Wire::Tar).await.unwrap();
        let mut sent = Vec::new();
        stream.read_to_end(&mut sent).await.unwrap();
        assert_eq!(stream.read(&mut [0; 16]).await.unwrap(), 0, "the end stays the end");
        assert_eq!(sent, gunzip(&package.path));
        assert_eq!(sent.len() as u64, package.tar_size);
    }

    #[tokio::test]
    async fn a_kept_tar_stream_is_the_checked_one_for_every_upload_whatever_the_file_becomes() {
        let dir = tempfile::tempdir().unwrap();
        // Bytes gzip shrinks, as it does a build (a stream it cannot shrink is not kept).
        let build: Vec<u8> =
            noise(300_000).iter().map(|byte| b"ELF\0"[usize::from(byte % 4)]).collect();
        let path = write_package(Role::Worker, dir.path(), &build, 6);
        let checked = gunzip(&path);
        let package = super::super::inspect(&path, Role::Worker, &[], Some(dir.path())).unwrap();
        assert!(package.kept_tar.is_some());
        // Replaced and then damaged after its check: the uploads send what was checked.
        std::fs::write(&path, b"not even gzip").unwrap();
        let (first, second) =
            tokio::join!(read_all(&package, Wire::Tar), read_all(&package, Wire::Tar));
        assert_eq!(first.unwrap(), checked);
        assert_eq!(second.unwrap(), checked, "uploads side by side read it whole each");
    }

    #[tokio::test]
    async fn a_package_damaged_after_its_check_fails_to_read() {
        let dir = tempfile::tempdir().unwrap();
        let package = package(dir.path(), &noise(300_000), 1);
        let mut gz = std::fs::read(&package.path).unwrap();
        let middle = gz.len() / 2;
        gz[middle] ^= 0xff;
        std::fs::write(&package.path, &gz).unwrap();
        assert!(read_all(&package, Wire::Tar).await.is_err());
    }
}

//! The tar stream inside a package, kept as the check unpacks it, in an unnamed file (gone
//! with the process, however it ends): each upload then reads the stream from this machine's
//! page cache instead of inflating the package again (once per host), and every host gets
//! exactly the bytes that were checked, whatever happens to the package file meanwhile.
//!
//! Keeping it is an optimization, never a condition: when the file cannot be made or written
//! (no rights, a full disk), the check goes on and each upload unpacks the package itself. Nor
//! is it kept when gzip did not shrink the package (a build of random-looking bytes): inflating
//! that is a copy, as cheap as reading the kept stream back, and writing it would be all cost
//! (0.08 s more for a 256 MiB package here, where a 128 MiB build of machine code, shrunk 2.6
//! times, takes 0.08 s less). Nor where it would take more than half the free space: the store
//! must stay writable (its lock, meta.yaml, the audit record) while it is kept, and it is let go
//! once the uploads are done ([`KeptTar::release`]).

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;

/// Where to keep the stream inside the gzip file `package`: `dir`, when the stream is worth
/// keeping there. It is when it unpacks to at least a tenth more than the file's size, as its
/// last member's trailer says (ISIZE, the member's unpacked size modulo 2^32: one read of four
/// bytes, before the check reads the rest; a file that is not gzip at all is refused by the
/// check anyway), and takes at most half the free space of `dir`'s file system.
pub(super) fn keep_in<'d>(package: &File, dir: Option<&'d Path>) -> Option<&'d Path> {
    let dir = dir?;
    let size = package.metadata().ok()?.len();
    let mut trailer = [0u8; 4];
    if size < 18 || package.read_exact_at(&mut trailer, size - 4).is_err() {
        return None;
    }
    let unpacked = u64::from(u32::from_le_bytes(trailer));
    let shrunk = unpacked.saturating_mul(9) > size.saturating_mul(10);
    (shrunk && has_room(dir, unpacked)).then_some(dir)
}

/// Whether `dir`'s file system has at least twice `bytes` free (for its users, not root's
/// reserve).
fn has_room(dir: &Path, bytes: u64) -> bool {
    match rustix::fs::statvfs(dir) {
        Ok(fs) => bytes.saturating_mul(2) <= fs.f_bavail.saturating_mul(fs.f_frsize),
        Err(err) => {
            tracing::debug!("the package's tar stream is not kept in {}: {err}", dir.display());
            false
        }
    }
}

/// A package's checked tar stream, kept; cheap to clone, each reader reads it from its start.
#[derive(Clone)]
pub struct KeptTar(Arc<Kept>);

struct Kept {
    file: File,
    /// Let go: its space is freed, and no reader reads it any more.
    released: AtomicBool,
}

impl KeptTar {
    /// A reader of the whole stream, independent of any other; `None` once released.
    pub(super) fn reader(&self) -> Option<impl Read + Send + 'static> {
        let released = self.0.released.load(Ordering::Acquire);
        (!released).then(|| KeptTarReader { kept: self.0.clone(), offset: 0 })
    }

    /// Frees the stream's disk space now (its uploads are done), though clones of the package
    /// that holds it live on; a later upload unpacks the package again.
    pub fn release(&self) {
        self.0.released.store(true, Ordering::Release);
        if let Err(err) = self.0.file.set_len(0) {
            tracing::debug!("letting the kept tar stream go: {err}");
        }
    }
}

impl fmt::Debug for KeptTar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeptTar")
    }
}

struct KeptTarReader {
    kept: Arc<Kept>,
    offset: u64,
}

impl Read for KeptTarReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Positioned reads: readers of the same file never move each other's offset.
        let read = self.kept.file.read_at(buf, self.offset)?;
        self.offset += read as u64;
        Ok(read)
    }
}

/// How much is written at a time, and how many such chunks may wait for the writing thread.
const CHUNK: usize = 256 * 1024;
const CHUNKS_AHEAD: usize = 4;

/// A reader that keeps a copy of every byte read through it, written to an unnamed file in a
/// directory on a thread of its own (the check's unpacking and hashing keep their cores).
pub(super) struct Keeping<R> {
    inner: R,
    pending: Vec<u8>,
    writer: Option<Writer>,
}

struct Writer {
    /// `None` once the writing thread stopped (it failed): nothing more is sent.
    chunks: Option<mpsc::SyncSender<Vec<u8>>>,
    thread: thread::JoinHandle<io::Result<File>>,
}

impl<R: Read> Keeping<R> {
    /// Keeps what is read from `inner` in `dir`, or nothing (`None`, or when no file can be
    /// made there: the reason is logged).
    pub(super) fn new(inner: R, dir: Option<&Path>) -> Self {
        let writer = dir.and_then(|dir| match tempfile::tempfile_in(dir) {
            Ok(file) => Some(Writer::start(file)),
            Err(err) => {
                tracing::debug!("the package's tar stream is not kept in {}: {err}", dir.display());
                None
            }
        });
        Keeping { inner, pending: Vec::new(), writer }
    }

    fn send_pending(&mut self) {
        let chunk = std::mem::take(&mut self.pending);
        let Some(writer) = &mut self.writer else { return };
        if writer.chunks.as_ref().is_some_and(|sender| sender.send(chunk).is_err()) {
            // The writing thread stopped on an error, which `finish` reports.
            writer.chunks = None;
        }
    }

    /// The reader, and the file holding every byte read through it when all of them were
    /// written.
    pub(super) fn finish(mut self) -> (R, Option<KeptTar>) {
        if !self.pending.is_empty() {
            self.send_pending();
        }
        let kept = self.writer.take().and_then(|Writer { chunks, thread }| {
            drop(chunks);
            match thread.join().expect("the writing thread does not panic") {
                Ok(file) => {
                    Some(KeptTar(Arc::new(Kept { file, released: AtomicBool::new(false) })))
                }
                Err(err) => {
                    tracing::debug!("the package's tar stream is not kept: {err}");
                    None
                }
            }
        });
        (self.inner, kept)
    }

    /// The reader inside.
    pub(super) fn get_ref(&self) -> &R {
        &self.inner
    }
}

impl Writer {
    fn start(mut file: File) -> Writer {
        let (chunks, received) = mpsc::sync_channel::<Vec<u8>>(CHUNKS_AHEAD);
        let thread = thread::spawn(move || {
            for chunk in received {
                file.write_all(&chunk)?;
            }
            Ok(file)
        });
        Writer { chunks: Some(chunks), thread }
    }
}

impl<R: Read> Read for Keeping<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        if self.writer.as_ref().is_some_and(|writer| writer.chunks.is_some()) {
            if self.pending.capacity() == 0 {
                self.pending.reserve_exact(CHUNK);
            }
            self.pending.extend_from_slice(&buf[..read]);
            if self.pending.len() >= CHUNK {
                self.send_pending();
            }
        }
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_through(data: &[u8], dir: Option<&Path>) -> (Vec<u8>, Option<KeptTar>) {
        let mut keeping = Keeping::new(data, dir);
        let mut read = Vec::new();
        // Small reads, as tar's headers are read: the copy is whole all the same.
        let mut buf = [0; 1000];
        loop {
            let n = keeping.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            read.extend_from_slice(&buf[..n]);
        }
        let (_, kept) = keeping.finish();
        (read, kept)
    }

    #[test]
    fn what_is_read_through_is_kept_whole_and_each_reader_reads_it_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..3 * CHUNK + 12_345).map(|i| (i * 7 % 251) as u8).collect();
        let (read, kept) = read_through(&data, Some(dir.path()));
        assert_eq!(read, data);
        let kept = kept.expect("a writable directory keeps the stream");
        let (mut first, mut second) = (kept.reader().unwrap(), kept.reader().unwrap());
        let mut head = [0; 100];
        first.read_exact(&mut head).unwrap();
        let mut whole = Vec::new();
        second.read_to_end(&mut whole).unwrap();
        assert_eq!(whole, data, "a reader is not moved by another");
        assert_eq!(head[..], data[..100]);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the file has no name");
        kept.release();
        assert!(kept.reader().is_none(), "a released stream is read no more");
        assert_eq!(kept.0.file.metadata().unwrap().len(), 0, "its space is freed");
    }

    fn gzip_file(data: &[u8], level: u32) -> File {
        let mut encoder = flate2::write::GzEncoder::new(
            tempfile::tempfile().unwrap(),
            flate2::Compression::new(level),
        );
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn only_a_stream_gzip_shrank_and_with_room_beside_it_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let worth_keeping = |file: &File| keep_in(file, Some(dir.path())).is_some();
        let text = b"machine code compresses about 2.6 times ".repeat(10_000);
        assert!(worth_keeping(&gzip_file(&text, 6)));
        assert!(keep_in(&gzip_file(&text, 6), None).is_none(), "not asked for");
        assert!(!worth_keeping(&gzip_file(&text, 0)), "stored: inflating it is a copy");
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let noise: Vec<u8> = (0..1 << 20)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        assert!(!worth_keeping(&gzip_file(&noise, 6)), "random bytes do not shrink");
        assert!(!worth_keeping(&tempfile::tempfile().unwrap()), "an empty file");
    }

    #[test]
    fn a_stream_is_kept_only_where_it_takes_at_most_half_the_free_space() {
        let dir = tempfile::tempdir().unwrap();
        let fs = rustix::fs::statvfs(dir.path()).unwrap();
        let free = fs.f_bavail * fs.f_frsize;
        assert!(has_room(dir.path(), free / 2));
        assert!(!has_room(dir.path(), free / 2 + (1 << 20)), "the store must stay writable");
        assert!(!has_room(Path::new("/nonexistent/dir"), 1));
    }

    #[test]
    fn nowhere_to_keep_it_keeps_nothing_and_reads_all_the_same() {
        let data = vec![42; CHUNK + 1];
        let (read, kept) = read_through(&data, Some(Path::new("/nonexistent/dir")));
        assert_eq!(read, data);
        assert!(kept.is_none());
        let (read, kept) = read_through(&data, None);
        assert_eq!(read, data);
        assert!(kept.is_none());
    }

    #[test]
    fn a_failed_write_keeps_nothing_and_reads_all_the_same() {
        // /dev/full takes no byte: as a full disk would.
        let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
        let data = vec![7; 3 * CHUNK];
        let mut keeping = Keeping { inner: &data[..], pending: Vec::new(), writer: None };
        keeping.writer = Some(Writer::start(full));
        let mut read = Vec::new();
        keeping.read_to_end(&mut read).unwrap();
        assert_eq!(read, data);
        assert!(keeping.finish().1.is_none());
    }
}

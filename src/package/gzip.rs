//! The package's bytes as `gzip -d` (and so `tar -xzf` on the hosts) reads them: every member
//! in turn, zero padding after the last one and nothing else, and never more than a limit.

use std::io::{self, BufRead, Read};

use flate2::bufread::GzDecoder;

/// Why the decompressed stream stopped short.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum StreamFault {
    /// A member's header, deflate data or trailer is bad, or the file could not be read.
    Gzip(String),
    /// Bytes after the last member that are neither another member nor zero padding.
    TrailingData,
    /// More than the limit was unpacked.
    TooBig,
}

/// Every gzip member of a file in turn, as one stream, the way `gzip -d` (and so `tar -xzf`
/// on the hosts) reads it: zero bytes after the last member are padding, anything else there
/// is an error. Counts what it unpacks and stops past `limit`.
pub(super) struct Members<R> {
    /// Always `Some`; an `Option` only to swap in the next member's decoder.
    member: Option<GzDecoder<R>>,
    unpacked: u64,
    limit: u64,
    /// The first fault met; every error this reader returned comes from it.
    pub(super) fault: Option<StreamFault>,
}

impl<R: BufRead> Members<R> {
    pub(super) fn new(source: R, limit: u64) -> Self {
        Members { member: Some(GzDecoder::new(source)), unpacked: 0, limit, fault: None }
    }

    /// The bytes unpacked so far.
    pub(super) fn unpacked(&self) -> u64 {
        self.unpacked
    }

    pub(super) fn into_source(self) -> R {
        self.member.expect("a member decoder").into_inner()
    }

    fn fail(&mut self, fault: StreamFault) -> io::Error {
        let err = io::Error::other(format!("{fault:?}"));
        self.fault.get_or_insert(fault);
        err
    }

    /// After a member's end (its CRC and length checked): `Ok(true)` when another member
    /// starts, `Ok(false)` at the end of the file, past any zero padding.
    fn next_member(&mut self) -> Result<bool, StreamFault> {
        let source = self.member.as_mut().expect("a member decoder").get_mut();
        let gzip_fault = |err: io::Error| StreamFault::Gzip(err.to_string());
        let mut padding = false;
        loop {
            let rest = source.fill_buf().map_err(gzip_fault)?;
            let (zeros, len) = (rest.iter().take_while(|b| **b == 0).count(), rest.len());
            match rest.first() {
                None => return Ok(false),
                Some(0x1f) if !padding => break,
                Some(0) if zeros == len => {
                    padding = true;
                    source.consume(zeros);
                }
                Some(_) => return Err(StreamFault::TrailingData),
            }
        }
        let source = self.member.take().expect("a member decoder").into_inner();
        self.member = Some(GzDecoder::new(source));
        Ok(true)
    }
}

impl<R: BufRead> Read for Members<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if let Some(fault) = self.fault.clone() {
            return Err(self.fail(fault));
        }
        loop {
            match self.member.as_mut().expect("a member decoder").read(buf) {
                Ok(0) => match self.next_member() {
                    Ok(true) => {}
                    Ok(false) => return Ok(0),
                    Err(fault) => return Err(self.fail(fault)),
                },
                Ok(n) => {
                    self.unpacked += n as u64;
                    if self.unpacked > self.limit {
                        return Err(self.fail(StreamFault::TooBig));
                    }
                    return Ok(n);
                }
                Err(err) => return Err(self.fail(StreamFault::Gzip(err.to_string()))),
            }
        }
    }
}

//! Replies waiting to be written to one client: complete replies in order, written with
//! vectored writes straight from their buffers (no copy), counted in bytes so a client that
//! stops reading is disconnected at a bound instead of growing slotgate's memory.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Most buffers handed to one `writev`.
const MAX_SLICES: usize = 64;

/// The client's pending output.
#[derive(Debug, Default)]
pub struct Output {
    frames: VecDeque<Bytes>,
    /// Bytes in `frames`.
    bytes: usize,
    /// The stream keeps written bytes until flushed (TLS); plain TCP does not.
    buffered: bool,
    /// Written to a buffering stream and not flushed since.
    unflushed: bool,
}

impl Output {
    /// Output for a stream that keeps written bytes until flushed (`buffered`: TLS) or not.
    pub fn new(buffered: bool) -> Output {
        Output {
            buffered,
            ..Output::default()
        }
    }

    /// Queues a complete reply (or push frame) after the ones already queued.
    pub fn push(&mut self, frame: Bytes) {
        if frame.is_empty() {
            return;
        }
        self.bytes += frame.len();
        self.frames.push_back(frame);
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Whether `write_some` has work: replies to write, or written ones to flush.
    pub fn wants_write(&self) -> bool {
        !self.frames.is_empty() || self.unflushed
    }

    /// Bytes waiting to be written.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Writes as much as the socket takes in one vectored write, or flushes what a buffering
    /// stream (TLS) still holds once every reply was written. Cancel-safe: a write that has
    /// not completed wrote nothing, and an interrupted flush is done again.
    pub async fn write_some(&mut self, wr: &mut (impl AsyncWrite + Unpin)) -> std::io::Result<()> {
        if self.frames.is_empty() {
            wr.flush().await?;
            self.unflushed = false;
            return Ok(());
        }
        let written = if self.frames.len() == 1 {
            // One reply (the `-P 1` case): a plain send is cheaper in the kernel than writev.
            wr.write(&self.frames[0]).await?
        } else {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let mut count = 0;
            for (slot, frame) in slices.iter_mut().zip(&self.frames) {
                *slot = IoSlice::new(frame);
                count += 1;
            }
            wr.write_vectored(&slices[..count]).await?
        };
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        self.consume(written);
        self.unflushed = self.buffered;
        Ok(())
    }

    /// Writes and flushes everything (connection closing).
    pub async fn flush(&mut self, wr: &mut (impl AsyncWrite + Unpin)) -> std::io::Result<()> {
        while self.wants_write() {
            self.write_some(wr).await?;
        }
        Ok(())
    }

    /// Drops `n` written bytes off the front.
    fn consume(&mut self, mut n: usize) {
        self.bytes -= n;
        while n > 0 {
            let Some(front) = self.frames.front_mut() else {
                return;
            };
            if front.len() <= n {
                n -= front.len();
                self.frames.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_writes_keep_the_rest_in_order() {
        let mut out = Output::default();
        out.push(Bytes::from_static(b"+OK\r\n"));
        out.push(Bytes::new());
        out.push(Bytes::from_static(b"$3\r\nabc\r\n"));
        assert_eq!(out.bytes(), 14);
        out.consume(7);
        assert_eq!(out.bytes(), 7);
        assert_eq!(out.frames.len(), 1);
        assert_eq!(&out.frames[0][..], b"\r\nabc\r\n");
        out.consume(7);
        assert!(out.is_empty());
        assert_eq!(out.bytes(), 0);
    }
}

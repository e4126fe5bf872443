//! CRC-32 helpers (IEEE polynomial, as computed by `crc32fast`).

use std::io::{self, Write};

/// CRC-32 (IEEE) of `bytes`.
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// A writer adapter that counts the bytes written through it and computes their CRC-32.
#[derive(Debug)]
pub struct ChecksummingWriter<W> {
    inner: W,
    hasher: crc32fast::Hasher,
    count: u64,
}

impl<W: Write> ChecksummingWriter<W> {
    /// Wraps `inner`; counting starts at zero.
    pub fn new(inner: W) -> Self {
        ChecksummingWriter {
            inner,
            hasher: crc32fast::Hasher::new(),
            count: 0,
        }
    }

    /// Bytes successfully written so far.
    pub fn bytes_written(&self) -> u64 {
        self.count
    }

    /// CRC-32 of the bytes written so far.
    pub fn crc32(&self) -> u32 {
        self.hasher.clone().finalize()
    }

    /// The wrapped writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// Returns the wrapped writer, the byte count and the CRC-32.
    pub fn into_parts(self) -> (W, u64, u32) {
        let crc = self.hasher.finalize();
        (self.inner, self.count, crc)
    }
}

impl<W: Write> Write for ChecksummingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector() {
        // The standard CRC-32 check value.
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn writer_matches_one_shot() {
        let mut w = ChecksummingWriter::new(Vec::new());
        w.write_all(b"1234").unwrap();
        w.write_all(b"56789").unwrap();
        assert_eq!(w.bytes_written(), 9);
        assert_eq!(w.crc32(), 0xcbf4_3926);
        let (buf, n, crc) = w.into_parts();
        assert_eq!((buf.len(), n, crc), (9, 9, 0xcbf4_3926));
    }
}

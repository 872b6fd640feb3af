//! A `.tar.gz` written in memory: ustar entries, gzip around them; [`zip`] writes a `.zip`.
//!
//! No tar or deflate crate is in the build's offline registry, so this is the small subset we
//! need: regular files only, and gzip with *stored* (uncompressed) deflate blocks. Every `tar`
//! and `gunzip` reads it; it is as large as its contents, which for logs of a `--since` window
//! is fine. Swap in `tar` + `flate2` when they are available.

/// Why an entry was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArchiveError {
    /// The path does not fit a ustar header (100 bytes of name, 155 of prefix).
    #[error("path too long for an archive entry: {0}")]
    PathTooLong(String),
    /// Too large (or too many entries) for a zip without zip64.
    #[error("too large for a .zip (4 GiB, 65,535 entries): {0}")]
    TooLargeForZip(String),
}

/// Files in order, then [`finish`](Archive::finish) for the `.tar.gz` bytes.
#[derive(Debug, Default)]
pub struct Archive {
    tar: Vec<u8>,
}

impl Archive {
    pub fn new() -> Archive {
        Archive::default()
    }

    /// Adds a regular file, mode 0600, modified at `mtime` (seconds since the epoch).
    pub fn add(&mut self, path: &str, data: &[u8], mtime: u64) -> Result<(), ArchiveError> {
        let (prefix, name) = split_path(path)?;
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        octal(&mut h[100..108], 0o600);
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(&mut h[124..136], data.len() as u64);
        octal(&mut h[136..148], mtime);
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
        // The checksum counts its own field as spaces.
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        let field = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(field.as_bytes());
        self.tar.extend_from_slice(&h);
        self.tar.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.tar.extend(std::iter::repeat_n(0u8, pad));
        Ok(())
    }

    /// The archive, gzipped.
    pub fn finish(mut self, mtime: u64) -> Vec<u8> {
        self.tar.extend(std::iter::repeat_n(0u8, 1024));
        gzip_stored(&self.tar, mtime)
    }
}

/// Splits a path into ustar's prefix and name fields.
fn split_path(path: &str) -> Result<(&str, &str), ArchiveError> {
    if path.len() <= 100 {
        return Ok(("", path));
    }
    for (i, _) in path.match_indices('/') {
        let (prefix, name) = (&path[..i], &path[i + 1..]);
        if prefix.len() <= 155 && name.len() <= 100 && !name.is_empty() {
            return Ok((prefix, name));
        }
    }
    Err(ArchiveError::PathTooLong(path.to_owned()))
}

/// `value` in octal, zero-padded, NUL-terminated, filling `field`.
fn octal(field: &mut [u8], value: u64) {
    let text = format!("{value:0width$o}\0", width = field.len() - 1);
    field.copy_from_slice(text.as_bytes());
}

/// gzip (RFC 1952) around deflate stored blocks (RFC 1951 §3.2.4).
pub fn gzip_stored(data: &[u8], mtime: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 65535 * 5 + 32);
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0]);
    out.extend_from_slice(&(mtime as u32).to_le_bytes());
    out.extend_from_slice(&[0, 255]);
    let mut chunks = data.chunks(65535).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        out.push(u8::from(last));
        let len = chunk.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// CRC-32 (IEEE 802.3), as gzip uses.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in data {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

pub mod zip;

#[cfg(test)]
mod tests;

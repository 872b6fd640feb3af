//! A `.zip` written in memory (APPNOTE 6.3.x): local headers, *stored* entries with their
//! CRC-32, the central directory, the end record. No zip64, so up to 65,535 entries of less than
//! 4 GiB each, far beyond a log archive.
//!
//! Hand-written for the same reason as the `.tar.gz` next to it: the build's offline registry has
//! no zip or deflate crate. Every unzip tool (`unzip`, Windows Explorer, macOS Archive Utility,
//! Python's `zipfile`) reads stored entries.

use super::{crc32, ArchiveError};

/// General-purpose flag 11: the names are UTF-8.
const UTF8_NAMES: u16 = 1 << 11;
/// Version 2.0: what stored entries and directories need.
const VERSION_NEEDED: u16 = 20;
/// Made by: Unix (3) in the high byte, so the mode in the external attributes counts.
const MADE_BY: u16 = (3 << 8) | VERSION_NEEDED;
/// A regular file, mode 0600, in the high half of the external attributes.
const EXTERNAL_ATTRS: u32 = 0o100_600 << 16;

/// One written entry, for the central directory.
#[derive(Debug)]
struct Entry {
    name: String,
    crc: u32,
    size: u32,
    offset: u32,
    time: u16,
    date: u16,
}

/// Files in order, then [`finish`](Zip::finish) for the `.zip` bytes.
#[derive(Debug, Default)]
pub struct Zip {
    out: Vec<u8>,
    entries: Vec<Entry>,
}

impl Zip {
    pub fn new() -> Zip {
        Zip::default()
    }

    /// Adds a regular file, mode 0600, modified at `mtime` (seconds since the epoch, UTC).
    pub fn add(&mut self, path: &str, data: &[u8], mtime: u64) -> Result<(), ArchiveError> {
        let too_large = || ArchiveError::TooLargeForZip(path.to_owned());
        let name_len =
            u16::try_from(path.len()).map_err(|_| ArchiveError::PathTooLong(path.into()))?;
        let size = u32::try_from(data.len()).map_err(|_| too_large())?;
        let offset = u32::try_from(self.out.len()).map_err(|_| too_large())?;
        if self.entries.len() >= usize::from(u16::MAX) {
            return Err(too_large());
        }
        let (time, date) = dos_time(mtime);
        let crc = crc32(data);
        let o = &mut self.out;
        o.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        o.extend_from_slice(&VERSION_NEEDED.to_le_bytes());
        o.extend_from_slice(&UTF8_NAMES.to_le_bytes());
        o.extend_from_slice(&0u16.to_le_bytes()); // stored
        o.extend_from_slice(&time.to_le_bytes());
        o.extend_from_slice(&date.to_le_bytes());
        o.extend_from_slice(&crc.to_le_bytes());
        o.extend_from_slice(&size.to_le_bytes()); // compressed = uncompressed
        o.extend_from_slice(&size.to_le_bytes());
        o.extend_from_slice(&name_len.to_le_bytes());
        o.extend_from_slice(&0u16.to_le_bytes()); // no extra field
        o.extend_from_slice(path.as_bytes());
        o.extend_from_slice(data);
        u32::try_from(self.out.len()).map_err(|_| too_large())?;
        self.entries.push(Entry {
            name: path.to_owned(),
            crc,
            size,
            offset,
            time,
            date,
        });
        Ok(())
    }

    /// The archive: what was added, the central directory and the end record.
    pub fn finish(mut self) -> Result<Vec<u8>, ArchiveError> {
        let start = self.out.len();
        for e in &self.entries {
            let o = &mut self.out;
            o.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
            o.extend_from_slice(&MADE_BY.to_le_bytes());
            o.extend_from_slice(&VERSION_NEEDED.to_le_bytes());
            o.extend_from_slice(&UTF8_NAMES.to_le_bytes());
            o.extend_from_slice(&0u16.to_le_bytes());
            o.extend_from_slice(&e.time.to_le_bytes());
            o.extend_from_slice(&e.date.to_le_bytes());
            o.extend_from_slice(&e.crc.to_le_bytes());
            o.extend_from_slice(&e.size.to_le_bytes());
            o.extend_from_slice(&e.size.to_le_bytes());
            // Checked in `add`: the name fits 16 bits.
            o.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
            o.extend_from_slice(&[0; 8]); // extra, comment, disk, internal attributes
            o.extend_from_slice(&EXTERNAL_ATTRS.to_le_bytes());
            o.extend_from_slice(&e.offset.to_le_bytes());
            o.extend_from_slice(e.name.as_bytes());
        }
        let too_large = || ArchiveError::TooLargeForZip("the central directory".into());
        let cd_size = u32::try_from(self.out.len() - start).map_err(|_| too_large())?;
        let cd_offset = u32::try_from(start).map_err(|_| too_large())?;
        // Checked in `add`: fewer than 65,535 entries.
        let count = self.entries.len() as u16;
        let o = &mut self.out;
        o.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
        o.extend_from_slice(&[0; 4]); // this disk, the directory's disk
        o.extend_from_slice(&count.to_le_bytes());
        o.extend_from_slice(&count.to_le_bytes());
        o.extend_from_slice(&cd_size.to_le_bytes());
        o.extend_from_slice(&cd_offset.to_le_bytes());
        o.extend_from_slice(&0u16.to_le_bytes()); // no comment
        Ok(self.out)
    }
}

/// MS-DOS time and date (2-second resolution, years 1980–2107) of a UTC Unix time; earlier
/// times are 1980-01-01 00:00, later ones 2107-12-31 23:59:58.
pub fn dos_time(unix: u64) -> (u16, u16) {
    const MIN: u64 = 315_532_800; // 1980-01-01
    const MAX: u64 = 4_354_819_198; // 2107-12-31 23:59:58
    let t = unix.clamp(MIN, MAX);
    let days = t / 86_400;
    let secs = t % 86_400;
    let (y, m, d) = civil_from_days(days);
    let time = ((secs / 3600) << 11) | (((secs % 3600) / 60) << 5) | ((secs % 60) / 2);
    let date = ((y - 1980) << 9) | (m << 5) | d;
    // In range by the clamp above: the year offset fits 7 bits, the rest their fields.
    (time as u16, date as u16)
}

/// Year, month (1–12), day (1–31) of the day `days` after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for days after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests;

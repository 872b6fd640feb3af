use super::*;

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// Reads a zip the way unzip does: from the end record through the central directory to each
/// local header, checking that both headers agree and each CRC matches. Returns (name, data).
fn read(zip: &[u8]) -> Vec<(String, Vec<u8>)> {
    let end = zip.len() - 22;
    assert_eq!(u32_at(zip, end), 0x0605_4b50, "the end record");
    let count = usize::from(u16_at(zip, end + 10));
    assert_eq!(u16_at(zip, end + 8), u16_at(zip, end + 10));
    let cd_size = u32_at(zip, end + 12) as usize;
    let mut at = u32_at(zip, end + 16) as usize;
    assert_eq!(
        at + cd_size,
        end,
        "the directory ends where the end record starts"
    );
    let mut files = Vec::new();
    for _ in 0..count {
        assert_eq!(u32_at(zip, at), 0x0201_4b50);
        assert_eq!(u16_at(zip, at + 10), 0, "stored");
        let crc = u32_at(zip, at + 16);
        let size = u32_at(zip, at + 20) as usize;
        assert_eq!(u32_at(zip, at + 24) as usize, size);
        let name_len = usize::from(u16_at(zip, at + 28));
        assert_eq!(u32_at(zip, at + 38), 0o100_600 << 16, "a 0600 file");
        let local = u32_at(zip, at + 42) as usize;
        let name = String::from_utf8(zip[at + 46..at + 46 + name_len].to_vec()).unwrap();
        at += 46 + name_len;

        assert_eq!(u32_at(zip, local), 0x0403_4b50);
        assert_eq!(u32_at(zip, local + 14), crc, "local and central CRC agree");
        assert_eq!(u32_at(zip, local + 18) as usize, size);
        assert_eq!(usize::from(u16_at(zip, local + 26)), name_len);
        let data_at = local + 30 + name_len;
        assert_eq!(&zip[local + 30..data_at], name.as_bytes());
        let data = zip[data_at..data_at + size].to_vec();
        assert_eq!(crc32(&data), crc);
        files.push((name, data));
    }
    assert_eq!(at, end);
    files
}

#[test]
fn an_empty_zip_is_just_the_end_record() {
    let z = Zip::new().finish().unwrap();
    assert_eq!(
        z,
        [0x50, 0x4b, 5, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    );
    assert!(read(&z).is_empty());
}

#[test]
fn entries_come_back_with_their_names_and_bytes() {
    let mut z = Zip::new();
    z.add("tether-logs/README.txt", b"hello\n", 1_700_000_000)
        .unwrap();
    z.add("tether-logs/empty.txt", b"", 1_700_000_000).unwrap();
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    z.add("tether-logs/agents/ünïcode.log", &big, 1_700_000_000)
        .unwrap();
    let files = read(&z.finish().unwrap());
    assert_eq!(files.len(), 3);
    assert_eq!(
        files[0],
        ("tether-logs/README.txt".into(), b"hello\n".to_vec())
    );
    assert_eq!(files[1].1, b"");
    assert_eq!(files[2].0, "tether-logs/agents/ünïcode.log");
    assert_eq!(files[2].1, big);
}

#[test]
fn the_first_local_header_byte_by_byte() {
    let mut z = Zip::new();
    z.add("a", b"123456789", 1_700_000_000).unwrap();
    let b = z.finish().unwrap();
    assert_eq!(
        &b[..31],
        &[
            0x50, 0x4b, 3, 4, // signature
            20, 0, // version needed
            0, 8, // UTF-8 names
            0, 0, // stored
            0xaa, 0xb1, // 22:13:20 → (22 << 11) | (13 << 5) | 10
            0x6e, 0x57, // 2023-11-14 → (43 << 9) | (11 << 5) | 14
            0x26, 0x39, 0xf4, 0xcb, // CRC-32 of "123456789"
            9, 0, 0, 0, 9, 0, 0, 0, // sizes
            1, 0, 0, 0, // name length, no extra
            b'a',
        ][..]
    );
}

#[test]
fn dos_times_and_their_limits() {
    // 2023-11-14 22:13:20 UTC.
    assert_eq!(
        dos_time(1_700_000_000),
        ((22 << 11) | (13 << 5) | 10, (43 << 9) | (11 << 5) | 14)
    );
    // A leap day, odd seconds rounded down.
    assert_eq!(
        dos_time(951_782_399), // 2000-02-28 23:59:59
        ((23 << 11) | (59 << 5) | 29, (20 << 9) | (2 << 5) | 28)
    );
    assert_eq!(dos_time(951_782_400).1, (20 << 9) | (2 << 5) | 29); // 2000-02-29
    assert_eq!(dos_time(0), (0, (1 << 5) | 1), "before 1980: 1980-01-01");
    assert_eq!(
        dos_time(u64::MAX),
        ((23 << 11) | (59 << 5) | 29, (127 << 9) | (12 << 5) | 31)
    );
}

#[test]
fn a_name_too_long_for_zip_is_refused() {
    let long = "x".repeat(70_000);
    assert_eq!(
        Zip::new().add(&long, b"", 0),
        Err(ArchiveError::PathTooLong(long.clone()))
    );
}

use super::*;

/// Undoes [`gzip_stored`], checking what gzip readers check.
fn gunzip(gz: &[u8]) -> Vec<u8> {
    assert_eq!(&gz[..4], &[0x1f, 0x8b, 8, 0]);
    let mut at = 10;
    let mut out = Vec::new();
    loop {
        let last = gz[at] & 1 == 1;
        assert_eq!(gz[at] & 6, 0, "stored blocks only");
        let len = u16::from_le_bytes([gz[at + 1], gz[at + 2]]) as usize;
        let nlen = u16::from_le_bytes([gz[at + 3], gz[at + 4]]);
        assert_eq!(!nlen as usize, len);
        out.extend_from_slice(&gz[at + 5..at + 5 + len]);
        at += 5 + len;
        if last {
            break;
        }
    }
    let crc = u32::from_le_bytes(gz[at..at + 4].try_into().unwrap());
    let size = u32::from_le_bytes(gz[at + 4..at + 8].try_into().unwrap());
    assert_eq!(crc, crc32(&out));
    assert_eq!(size as usize, out.len());
    assert_eq!(at + 8, gz.len());
    out
}

#[test]
fn crc32_check_value() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    assert_eq!(crc32(b""), 0);
}

#[test]
fn gzip_splits_into_stored_blocks() {
    assert_eq!(gunzip(&gzip_stored(b"", 0)), b"");
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(gunzip(&gzip_stored(&big, 0)), big);
}

#[test]
fn tar_entries_have_valid_headers() {
    let mut a = Archive::new();
    a.add("tether-logs/doctor.json", b"{}\n", 1_700_000_000)
        .unwrap();
    let long = format!(
        "tether-logs/agents/{}/{}.log",
        "n".repeat(60),
        "p".repeat(80)
    );
    a.add(&long, b"hello", 1_700_000_000).unwrap();
    let tar = gunzip(&a.finish(0));
    assert_eq!(tar.len(), 512 * 2 + 512 * 2 + 1024);
    let h = &tar[..512];
    assert_eq!(&h[..23], b"tether-logs/doctor.json");
    assert_eq!(&h[124..136], b"00000000003\0");
    assert_eq!(&h[257..263], b"ustar\0");
    let sum: u32 = h
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(*b)
            }
        })
        .sum();
    let field = std::str::from_utf8(&h[148..154]).unwrap();
    assert_eq!(u32::from_str_radix(field, 8).unwrap(), sum);
    assert_eq!(&tar[512..515], b"{}\n");
    // The long path went into the prefix field.
    let h2 = &tar[1024..1536];
    assert_eq!(
        &h2[..(80 + 4)],
        format!("{}.log", "p".repeat(80)).as_bytes()
    );
    assert!(h2[345..].starts_with(format!("tether-logs/agents/{}", "n".repeat(60)).as_bytes()));
    assert!(matches!(
        Archive::new().add(&"x".repeat(300), b"", 0),
        Err(ArchiveError::PathTooLong(_))
    ));
}

/// The system's `tar` reads it, when there is one.
#[test]
fn system_tar_lists_it() {
    let mut a = Archive::new();
    a.add("d/one.txt", b"1", 0).unwrap();
    a.add("d/two.txt", &[b'x'; 70_000], 0).unwrap();
    let dir = std::env::temp_dir().join(format!("tether-archive-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("a.tar.gz");
    std::fs::write(&file, a.finish(0)).unwrap();
    let listed = std::process::Command::new("tar")
        .arg("tzvf")
        .arg(&file)
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    let Ok(listed) = listed else { return };
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(
        text.contains("d/one.txt") && text.contains("70000"),
        "{text}"
    );
}

use super::*;

#[test]
fn the_format_follows_the_name() {
    for (name, want) in [
        ("logs.tar.gz", Format::TarGz),
        ("/tmp/x/LOGS.TGZ", Format::TarGz),
        ("bug-123.zip", Format::Zip),
        ("dir.zip/bug.Zip", Format::Zip),
    ] {
        assert_eq!(Format::of(Path::new(name)), Ok(want), "{name}");
    }
    for bad in ["logs", "logs.gz", "logs.tar", ".zip", "/tmp/", "logs.zip/"] {
        let e = Format::of(Path::new(bad)).unwrap_err();
        assert!(
            e.ends_with("name it *.tar.gz, *.tgz or *.zip"),
            "{bad}: {e}"
        );
    }
    assert_eq!(
        parse_output("out.rar"),
        Err(
            "cannot tell the archive format of \"out.rar\": name it *.tar.gz, *.tgz or *.zip"
                .into()
        )
    );
}

#[test]
fn counts_read_naturally() {
    assert_eq!(plural(0, "pod"), "0 pods");
    assert_eq!(plural(1, "pod"), "1 pod");
    assert_eq!(plural(3, "namespace"), "3 namespaces");
}

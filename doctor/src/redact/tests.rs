use super::*;

#[test]
fn pem_private_keys_go_whole_even_when_cut_off() {
    let text = "before\n-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIB3x\nAwEHoUQDQgAE\n\
                -----END EC PRIVATE KEY-----\nafter\n-----BEGIN CERTIFICATE-----\nMIIB\n\
                -----END CERTIFICATE-----\n";
    let out = Redactor::new().redact(text);
    assert_eq!(
        out,
        "before\n<redacted key>\nafter\n-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    );
    let cut = Redactor::new().redact("x -----BEGIN PRIVATE KEY-----\nMIIEvQIBADAN");
    assert_eq!(cut, "x <redacted key>");
    assert!(!cut.contains("PRIVATE KEY"));
}

#[test]
fn bearer_tokens_and_jwts() {
    let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl";
    let out = Redactor::new().redact(&format!(
        "GET /api Authorization: Bearer abc.DEF-123_x= ok\ntoken {jwt} used\nbasic dXNlcjpwYXNz"
    ));
    assert_eq!(
        out,
        "GET /api Authorization: Bearer <redacted> ok\ntoken <redacted jwt> used\nbasic <redacted>"
    );
    // Prose stays.
    let prose = "Redacted: bearer tokens and basic auth";
    assert_eq!(Redactor::new().redact(prose), prose);
}

#[test]
fn public_parts_of_secrets_are_not_searched_for() {
    let data: Vec<(String, Vec<u8>)> = vec![
        ("namespace".into(), b"default-namespace".to_vec()),
        ("ca.crt".into(), b"-----BEGIN CERTIFICATE-----".to_vec()),
        ("token".into(), b"the-token-value".to_vec()),
    ];
    let values = secret_values(data.iter().map(|(k, v)| (k, v.as_slice())));
    assert_eq!(values, [b"the-token-value".to_vec()]);
}

#[test]
fn settings_that_look_secret() {
    let out = Redactor::new().redact(
        "token: abc123\npassword=hunter2 user=bob\n{\"client_secret\": \"s3cr3t\", \"n\": 1}\n\
         API_KEY='k-9' DB_PASSWORD=pw;\nsecret tether-manager-tls is fine",
    );
    assert_eq!(
        out,
        "token: <redacted>\npassword=<redacted> user=bob\n{\"client_secret\": \"<redacted>\", \"n\": 1}\n\
         API_KEY='<redacted>' DB_PASSWORD=<redacted>;\nsecret tether-manager-tls is fine"
    );
}

#[test]
fn known_secret_values_verbatim_and_in_base64() {
    let r = Redactor::new().with_values([b"s3cr3t-value".to_vec(), b"short".to_vec()]);
    assert_eq!(r.known_values(), 2);
    let out = r.redact(&format!(
        "env FOO=s3cr3t-value; encoded {}; no change",
        base64(b"s3cr3t-value")
    ));
    assert_eq!(out, "env FOO=<redacted>; encoded <redacted>; no change");
}

#[test]
fn multi_line_values_lose_their_long_lines() {
    let value = "line one is long enough\nshort\nline three is long enough too\n";
    let r = Redactor::new().with_values([value]);
    let out = r.redact("...line three is long enough too...");
    assert_eq!(out, "...<redacted>...");
}

#[test]
fn base64_matches_the_standard_alphabet() {
    assert_eq!(base64(b""), "");
    assert_eq!(base64(b"f"), "Zg==");
    assert_eq!(base64(b"fo"), "Zm8=");
    assert_eq!(base64(b"foo"), "Zm9v");
    assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    assert_eq!(base64(&[0xff, 0xfe]), "//4=");
}

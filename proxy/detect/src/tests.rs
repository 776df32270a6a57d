use super::*;

fn known(p: Protocol) -> Detection {
    Detection::Known(p)
}

/// Every prefix of `full` is NeedMore, and `full` itself is `expected`.
fn assert_prefixes(full: &[u8], expected: Protocol) {
    for n in 0..full.len() {
        assert_eq!(
            detect(&full[..n]),
            Detection::NeedMore,
            "prefix {:?}",
            String::from_utf8_lossy(&full[..n])
        );
    }
    assert_eq!(
        detect(full),
        known(expected),
        "{:?}",
        String::from_utf8_lossy(full)
    );
}

#[test]
fn http1_request_lines() {
    assert_prefixes(b"GET / HTTP/1.1\r\n", Protocol::Http1);
    assert_prefixes(b"POST /api/v1/items?x=1 HTTP/1.0\r\n", Protocol::Http1);
    assert_prefixes(b"CONNECT example.org:443 HTTP/1.1\r\n", Protocol::Http1);
    // A bare LF line end is tolerated (RFC 9112 §2.2).
    assert_eq!(
        detect(b"GET / HTTP/1.1\nHost: a\n\n"),
        known(Protocol::Http1)
    );
    // An extension method is still HTTP.
    assert_eq!(detect(b"PURGE /cache HTTP/1.1\r\n"), known(Protocol::Http1));
}

#[test]
fn http2_preface() {
    assert_prefixes(H2_PREFACE, Protocol::Http2);
    let mut with_settings = H2_PREFACE.to_vec();
    with_settings.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    assert_eq!(detect(&with_settings), known(Protocol::Http2));
}

#[test]
fn pri_method_that_is_not_the_preface_is_http1() {
    assert_eq!(detect(b"PRI /x HTTP/1.1\r\n"), known(Protocol::Http1));
}

#[test]
fn tls_client_hello() {
    assert_prefixes(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01], Protocol::Tls);
    assert_eq!(
        detect(&[0x16, 0x03, 0x03, 0x00, 0x20, 0x01, 0x00]),
        known(Protocol::Tls)
    );
    // A handshake record that is not a ClientHello (ServerHello), or a bad version, is opaque.
    assert_eq!(
        detect(&[0x16, 0x03, 0x03, 0x00, 0x20, 0x02]),
        known(Protocol::Opaque)
    );
    assert_eq!(detect(&[0x16, 0x02]), known(Protocol::Opaque));
    assert_eq!(detect(&[0x16, 0x03, 0x09]), known(Protocol::Opaque));
    assert_eq!(
        detect(&[0x16, 0x03, 0x01, 0x00, 0x00, 0x01]),
        known(Protocol::Opaque)
    );
}

#[test]
fn opaque_protocols() {
    // Redis RESP, a PostgreSQL startup message, SSH, random bytes.
    assert_eq!(detect(b"*1\r\n$4\r\nPING\r\n"), known(Protocol::Opaque));
    assert_eq!(
        detect(&[0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f]),
        known(Protocol::Opaque)
    );
    assert_eq!(detect(b"SSH-2.0-OpenSSH_9.2\r\n"), known(Protocol::Opaque));
    assert_eq!(detect(&[0xff, 0xfe, 0x00]), known(Protocol::Opaque));
    // A method-like word with the wrong line shape.
    assert_eq!(detect(b"HELLO WORLD\r\n"), known(Protocol::Opaque));
    assert_eq!(detect(b"GET / HTTP/2.0\r\n"), known(Protocol::Opaque));
    assert_eq!(detect(b"GET HTTP/1.1\r\n"), known(Protocol::Opaque));
    // A leading space, an overlong method, a control byte in the target.
    assert_eq!(detect(b" GET / HTTP/1.1\r\n"), known(Protocol::Opaque));
    assert_eq!(detect(&[b'A'; MAX_METHOD_LEN + 1]), known(Protocol::Opaque));
    assert_eq!(detect(b"GET /\x01"), known(Protocol::Opaque));
}

#[test]
fn text_protocols_that_look_like_http_wait_for_a_line() {
    // An SMTP-ish client line is undecided until its line ends, then opaque.
    assert_eq!(detect(b"EHLO example"), Detection::NeedMore);
    assert_eq!(detect(b"EHLO example\r\n"), known(Protocol::Opaque));
}

#[test]
fn a_full_buffer_always_decides() {
    let mut long_target = b"GET /".to_vec();
    long_target.resize(MAX_PEEK, b'a');
    assert_eq!(detect(&long_target), known(Protocol::Http1));
    let spaces = vec![b' '; MAX_PEEK * 2];
    assert_eq!(detect(&spaces), known(Protocol::Opaque));
    let mut pri = H2_PREFACE[..10].to_vec();
    pri.resize(MAX_PEEK, b'x');
    assert_ne!(detect(&pri), Detection::NeedMore);
}

#[test]
fn never_need_more_at_max_peek_for_any_first_byte() {
    for first in 0..=u8::MAX {
        for fill in [b'a', b' ', b'\r', 0u8, 0xff] {
            let mut buf = vec![fill; MAX_PEEK];
            buf[0] = first;
            assert_ne!(
                detect(&buf),
                Detection::NeedMore,
                "first={first:#x} fill={fill:#x}"
            );
        }
    }
}

/// Inputs the fuzz target found: a control byte decided "opaque" on a short read but not once the
/// line end (or a full buffer) arrived.
#[test]
fn the_answer_does_not_depend_on_how_bytes_were_split() {
    for (short, long) in [
        (&b"GET /\x01"[..], &b"GET /\x01 HTTP/1.1\r\n"[..]),
        (b"- \x1b", b"- \x1b HTTP/1.1\r\n"),
    ] {
        assert_eq!(detect(short), known(Protocol::Opaque));
        assert_eq!(detect(long), known(Protocol::Opaque));
    }
    let mut full = b"GET /\x01".to_vec();
    full.resize(MAX_PEEK, b'a');
    assert_eq!(detect(&full), known(Protocol::Opaque));
    // Non-ASCII bytes (a UTF-8 path some clients send raw) are not control bytes: still HTTP.
    assert_eq!(detect(b"GET /caf\xc3"), Detection::NeedMore);
    assert_eq!(
        detect(b"GET /caf\xc3\xa9 HTTP/1.1\r\n"),
        known(Protocol::Http1)
    );
}

//! Tunnel session cookies as a stranger sends them: never panics, and nothing but what the
//! key sealed opens.
#![no_main]
use kakuremichi_proto::access::{
    open_cookie, seal_cookie, SessionCookie, Subject, MAX_TOKEN_BYTES,
};
use libfuzzer_sys::fuzz_target;

const KEY: [u8; 32] = [7; 32];

fuzz_target!(|value: &str| {
    if let Ok(cookie) = open_cookie(&KEY, value, "app.example.com", 1_000) {
        // Only a sealed cookie opens: sealing what opened gives a value that opens the same.
        let again = seal_cookie(&KEY, &cookie);
        assert_eq!(
            open_cookie(&KEY, &again, "app.example.com", 1_000),
            Ok(cookie)
        );
    }
    let sealed = seal_cookie(
        &KEY,
        &SessionCookie {
            host: value.to_string(),
            subject: Subject::Password {
                epoch: value.to_string(),
            },
            expires: 2_000,
            issued: 0,
        },
    );
    // Longer than a browser keeps is refused, whoever sealed it.
    assert_eq!(
        open_cookie(&KEY, &sealed, value, 1_000).is_ok(),
        sealed.len() <= MAX_TOKEN_BYTES
    );
    assert!(open_cookie(&[8; 32], &sealed, value, 1_000).is_err());
});

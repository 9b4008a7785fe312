//! The path normaliser: never panics, and what it accepts is normal, stable and safe to
//! decide on (no empty or dot segments, no encoded separators).
#![no_main]
use kakuremichi_proto::path::{is_normal, normalize};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|raw: &str| {
    let Ok(normal) = normalize(raw) else { return };
    if normal == "*" {
        return;
    }
    assert!(normal.starts_with('/'), "{raw:?} -> {normal:?}");
    assert_eq!(
        normalize(&normal).as_deref(),
        Ok(normal.as_str()),
        "not stable: {raw:?}"
    );
    assert!(is_normal(&normal));
    let body = normal.trim_end_matches('/');
    for segment in body.split('/').skip(1) {
        assert!(!matches!(segment, "" | "." | ".."), "{raw:?} -> {normal:?}");
    }
    let lower = normal.to_ascii_lowercase();
    for encoded in ["%2f", "%5c", "%00", "%2e"] {
        assert!(!lower.contains(encoded), "{raw:?} -> {normal:?}");
    }
    assert!(!normal.contains('\\'));
});

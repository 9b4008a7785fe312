//! The one request path a gateway decides on and forwards, when the path decides anything
//! (a hostname split by path prefixes, or a tunnel with access rules).
//!
//! Origins normalise paths before they serve them (nginx merges slashes and removes dot
//! segments, WSGI servers percent-decode `PATH_INFO`), so a rule decided on the raw path can
//! be walked around: `/x/../admin` is `/admin` to the origin. The gateway therefore decides
//! on the path the origin will see, and forwards exactly that path:
//!
//! - percent-encoded unreserved characters are decoded, other encodings keep upper-case hex
//!   (RFC 3986 §6.2.2.1–2);
//! - `.` and `..` segments are removed (RFC 3986 §5.2.4) and repeated slashes merged;
//! - refused: an encoded `/`, `\` or NUL, a raw `\`, a dot segment that climbs above the
//!   root, a dot segment with `;` parameters (`..;`, read as `..` by servlet containers), a
//!   second layer of encoding of those characters (`%252e`), and bytes that do not decode to
//!   UTF-8 (overlong forms such as `%c0%ae`).

use std::fmt;

/// Why a path is refused (the gateway answers 400).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathRefused {
    /// Not an origin-form path, or a `%` without two hex digits after it.
    Malformed,
    /// `%2F`, `%5C`, `%00` or a raw `\`: the origin could split or cut the path elsewhere.
    EncodedSeparator,
    /// A `..` with nothing left to remove.
    AboveRoot,
    /// `.` or `..` with `;` parameters.
    DotWithParameters,
    /// `%25` before the encoding of `.`, `/`, `\` or NUL: an origin that decodes twice would
    /// see a dot segment or a separator.
    DoubleEncoded,
    /// The decoded bytes are not UTF-8.
    NotUtf8,
}

impl PathRefused {
    /// The sentence a 400 page shows.
    pub fn message(self) -> &'static str {
        match self {
            PathRefused::Malformed => "The request path is malformed.",
            PathRefused::EncodedSeparator => {
                "The request path holds an encoded slash, backslash or NUL."
            }
            PathRefused::AboveRoot => "The request path climbs above the root.",
            PathRefused::DotWithParameters => "The request path has a dot segment with parameters.",
            PathRefused::DoubleEncoded => "The request path encodes a dot or slash twice.",
            PathRefused::NotUtf8 => "The request path does not decode to UTF-8.",
        }
    }
}

impl fmt::Display for PathRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for PathRefused {}

/// Longest path accepted (the request line is bounded by hyper; this bounds our copies).
const MAX_PATH: usize = 8192;

/// The normalised form of `raw` (the path of a request target, without its query), or why it
/// is refused. `*` (the target of `OPTIONS *`) is returned as it is.
pub fn normalize(raw: &str) -> Result<String, PathRefused> {
    if raw == "*" {
        return Ok(raw.to_string());
    }
    if !raw.starts_with('/') || raw.len() > MAX_PATH {
        return Err(PathRefused::Malformed);
    }
    let canonical = canonical_encoding(raw)?;
    remove_dot_segments(&canonical)
}

/// Whether `path` is already in normal form: how Control checks the path prefixes and bypass
/// rules it is given, so that a rule can match.
pub fn is_normal(path: &str) -> bool {
    normalize(path).is_ok_and(|normal| normal == path)
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Decode unreserved characters, upper-case the hex of the rest, and refuse separators.
fn canonical_encoding(raw: &str) -> Result<String, PathRefused> {
    let bytes = raw.as_bytes();
    let mut canonical = String::with_capacity(raw.len());
    // Every byte as the origin decodes it, to check UTF-8 and a second layer of encoding.
    let mut decoded = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let high = bytes.get(i + 1).copied().and_then(hex_value);
                let low = bytes.get(i + 2).copied().and_then(hex_value);
                let (Some(high), Some(low)) = (high, low) else {
                    return Err(PathRefused::Malformed);
                };
                let value = high << 4 | low;
                if matches!(value, b'/' | b'\\' | 0) {
                    return Err(PathRefused::EncodedSeparator);
                }
                if is_unreserved(value) {
                    canonical.push(value as char);
                } else {
                    canonical.push('%');
                    canonical.push_str(&format!("{value:02X}"));
                }
                decoded.push(value);
                i += 3;
            }
            b'\\' => return Err(PathRefused::EncodedSeparator),
            _ if b.is_ascii_control() || b == b' ' || !b.is_ascii() => {
                return Err(PathRefused::Malformed)
            }
            _ => {
                canonical.push(b as char);
                decoded.push(b);
                i += 1;
            }
        }
    }
    let text = std::str::from_utf8(&decoded).map_err(|_| PathRefused::NotUtf8)?;
    if encodes_twice(text) {
        return Err(PathRefused::DoubleEncoded);
    }
    Ok(canonical)
}

/// Whether a once-decoded path still holds the encoding of `.`, `/`, `\` or NUL.
fn encodes_twice(decoded: &str) -> bool {
    let lower = decoded.to_ascii_lowercase();
    ["%2e", "%2f", "%5c", "%00"]
        .iter()
        .any(|needle| lower.contains(needle))
}

/// RFC 3986 §5.2.4 on a path whose dots are literal, merging empty segments; a trailing
/// slash (or a final dot segment) is kept as one.
fn remove_dot_segments(path: &str) -> Result<String, PathRefused> {
    let mut kept: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    // `path` starts with '/', so the first piece is empty.
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    for (index, segment) in segments.iter().enumerate() {
        let name = segment.split(';').next().unwrap_or_default();
        match *segment {
            "" | "." => {}
            ".." => {
                if kept.pop().is_none() {
                    return Err(PathRefused::AboveRoot);
                }
            }
            _ if name == "." || name == ".." => return Err(PathRefused::DotWithParameters),
            _ => kept.push(segment),
        }
        trailing_slash = index == last && matches!(*segment, "" | "." | "..");
    }
    let mut normal = String::with_capacity(path.len());
    for segment in &kept {
        normal.push('/');
        normal.push_str(segment);
    }
    if kept.is_empty() || trailing_slash {
        normal.push('/');
    }
    Ok(normal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_decided_as_origins_read_them() {
        let cases = [
            ("/", "/"),
            ("/admin/x", "/admin/x"),
            ("//admin/x", "/admin/x"),
            ("/./admin/x", "/admin/x"),
            ("/x/../admin/x", "/admin/x"),
            ("/x/%2e%2E/admin/x", "/admin/x"),
            ("/%61dmin/x", "/admin/x"),
            ("/admin/", "/admin/"),
            ("/admin/x/..", "/admin/"),
            ("/admin/.", "/admin/"),
            ("/a//b///c", "/a/b/c"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/a%20b", "/a%20b"),
            ("/%7Euser", "/~user"),
            ("/a;b/c", "/a;b/c"),
            ("/.well-known/x", "/.well-known/x"),
            ("/...", "/..."),
            ("*", "*"),
        ];
        for (raw, normal) in cases {
            assert_eq!(normalize(raw).as_deref(), Ok(normal), "{raw}");
            assert!(is_normal(normal), "{normal}");
        }
    }

    #[test]
    fn paths_an_origin_could_split_elsewhere_are_refused() {
        use PathRefused::*;
        let cases = [
            ("/admin%2fx", EncodedSeparator),
            ("/admin%2Fx", EncodedSeparator),
            ("/admin%5cx", EncodedSeparator),
            ("/admin\\x", EncodedSeparator),
            ("/admin%00.html", EncodedSeparator),
            ("/..", AboveRoot),
            ("/x/../../admin", AboveRoot),
            ("/%2e%2e/admin", AboveRoot),
            ("/public/..;/admin", DotWithParameters),
            ("/public/.;x/admin", DotWithParameters),
            ("/%252e%252e/admin", DoubleEncoded),
            ("/admin%252fx", DoubleEncoded),
            ("/%c0%ae%c0%ae/admin", NotUtf8),
            ("/%ff", NotUtf8),
            ("/%zz", Malformed),
            ("/%2", Malformed),
            ("admin", Malformed),
            ("", Malformed),
        ];
        for (raw, why) in cases {
            assert_eq!(normalize(raw), Err(why), "{raw}");
        }
        assert!(!is_normal("/%61dmin"));
        assert!(!is_normal("//admin"));
    }
}

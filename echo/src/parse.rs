//! The parsers for what a client sends the echo app, pure and total (no panics, no I/O), so
//! they can be unit-tested exhaustively and fuzzed (`echo/fuzz/`): query parameters, Go-style
//! durations (`?delay=`, `?delayRetry=`), `X-Echo-Set-Header` values, and the header-name
//! spelling Go's `net/http` shows.

use std::{fmt, time::Duration};

use http::{HeaderName, HeaderValue};

/// The most distinct response headers one request may ask for with `X-Echo-Set-Header`.
pub const MAX_SET_HEADERS: usize = 64;

/// Headers `X-Echo-Set-Header` may not set: they frame the response or the connection, and
/// a wrong one would break the answer itself rather than decorate it.
const FORBIDDEN_SET_HEADERS: &[&str] = &[
    "connection",
    "content-length",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// A query parameter that was present but could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// A `%` not followed by two hex digits.
    #[error("{value:?} has a malformed percent-escape (a % must be followed by two hex digits)")]
    BadEscape { value: String },
    /// The decoded bytes are not UTF-8.
    #[error("{value:?} does not decode to UTF-8 text")]
    NotUtf8 { value: String },
}

/// A duration that is not in Go's `time.ParseDuration` syntax, or is beyond the cap.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("{input:?} is not a duration: {reason} (write a number and a unit, e.g. 100ms, 1.5s or 1m30s; units ns, us, ms, s, m, h)")]
    Syntax { input: String, reason: SyntaxReason },
    #[error("{input:?} is longer than the most the echo app waits, {max:?}")]
    TooLong { input: String, max: Duration },
}

/// What was wrong with a duration's spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyntaxReason {
    Empty,
    /// A character where a number was expected.
    ExpectedNumber,
    /// A number with no unit after it.
    MissingUnit,
    UnknownUnit,
}

impl fmt::Display for SyntaxReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SyntaxReason::Empty => "it is empty",
            SyntaxReason::ExpectedNumber => "a number was expected",
            SyntaxReason::MissingUnit => "a number has no unit",
            SyntaxReason::UnknownUnit => "a unit is unknown",
        })
    }
}

/// An `X-Echo-Set-Header` value the echo app refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetHeaderError {
    #[error("asks for more than {max} distinct response headers")]
    TooMany { max: usize },
    #[error("asks to set {name}, which frames the response or the connection and cannot be set")]
    Forbidden { name: String },
}

/// The first value of the query parameter `name` in `query` (the part after `?`), decoded as
/// Go's `url.ParseQuery` does: pairs split on `&`, a pair with `;` ignored, `+` is a space,
/// `%XX` an escaped byte, and the first pair whose decoded key is `name` wins. `Ok(None)` when
/// no pair has that key; an error when the value of that first pair does not decode (Go skips
/// such a pair; here it is the client's mistake, said back to them).
pub fn query_param(query: &str, name: &str) -> Result<Option<String>, QueryError> {
    for pair in query.split('&') {
        if pair.is_empty() || pair.contains(';') {
            continue;
        }
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match unescape(key) {
            Some(key) if key == name.as_bytes() => {}
            _ => continue,
        }
        let bytes = unescape(value).ok_or_else(|| QueryError::BadEscape {
            value: value.to_owned(),
        })?;
        return String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| QueryError::NotUtf8 {
                value: value.to_owned(),
            });
    }
    Ok(None)
}

/// `application/x-www-form-urlencoded` decoding; `None` on a malformed escape.
fn unescape(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = hex(*bytes.get(i + 1)?)?;
                let lo = hex(*bytes.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 2;
            }
            _ => out.push(b),
        }
        i += 1;
    }
    Some(out)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A duration in Go's `time.ParseDuration` syntax (what echo-basic accepts for `?delay=`): an
/// optional sign, then one or more decimal numbers each with a unit (`ns`, `us`, `µs`, `μs`,
/// `ms`, `s`, `m`, `h`), as in `300ms`, `1.5s`, `1h2m`; `0` alone needs no unit. A negative
/// duration is zero (Go's `time.Sleep` returns at once). Anything longer than `max` is an
/// error rather than a long wait. Precision is the nanosecond; fraction digits past the 19th
/// are ignored.
pub fn parse_duration(input: &str, max: Duration) -> Result<Duration, DurationError> {
    let syntax = |reason| DurationError::Syntax {
        input: input.to_owned(),
        reason,
    };
    let (negative, mut rest) = match input.as_bytes().first() {
        Some(b'-') => (true, &input[1..]),
        Some(b'+') => (false, &input[1..]),
        _ => (false, input),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(syntax(SyntaxReason::Empty));
    }
    let max_nanos = max.as_nanos();
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = digits_len(rest);
        let (int_digits, after_int) = rest.split_at(int_len);
        let (frac_digits, after_number) = match after_int.strip_prefix('.') {
            Some(after_dot) => after_dot.split_at(digits_len(after_dot)),
            None => ("", after_int),
        };
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(syntax(SyntaxReason::ExpectedNumber));
        }
        let unit_len = after_number
            .bytes()
            .position(|b| b == b'.' || b.is_ascii_digit())
            .unwrap_or(after_number.len());
        let (unit, after_unit) = after_number.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "" => return Err(syntax(SyntaxReason::MissingUnit)),
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(syntax(SyntaxReason::UnknownUnit)),
        };
        // The integer part alone past the cap settles it; this also keeps every product
        // below far below u128's range (at most 20 digits times an hour in nanoseconds).
        let int = parse_capped(int_digits);
        let frac_digits = &frac_digits[..frac_digits.len().min(19)];
        let frac = parse_capped(frac_digits);
        let scale = 10u128.pow(u32::try_from(frac_digits.len()).unwrap_or(19));
        let element = int
            .saturating_mul(unit_nanos)
            .saturating_add(frac.saturating_mul(unit_nanos) / scale);
        total = total.saturating_add(element);
        rest = after_unit;
    }
    if negative {
        return Ok(Duration::ZERO);
    }
    if total > max_nanos {
        return Err(DurationError::TooLong {
            input: input.to_owned(),
            max,
        });
    }
    // total <= max_nanos, and max came from a Duration: it fits.
    Ok(Duration::from_nanos(
        u64::try_from(total).unwrap_or(u64::MAX),
    ))
}

fn digits_len(s: &str) -> usize {
    s.bytes().take_while(u8::is_ascii_digit).count()
}

/// Decimal digits as a number, saturating at `u64::MAX` (far beyond any cap).
fn parse_capped(digits: &str) -> u128 {
    digits.bytes().fold(0u128, |n, d| {
        n.saturating_mul(10)
            .saturating_add(u128::from(d - b'0'))
            .min(u128::from(u64::MAX))
    })
}

/// The response headers asked for by every `X-Echo-Set-Header` value, as echo-basic reads
/// them: each value is a comma-separated list of `Name: value` pairs; whitespace around a pair
/// and around a value is dropped; a pair without `:` sets an empty value; the same name twice
/// joins its values with `,`. A name that is not a valid header name is skipped, as Go's
/// server drops it when writing. Errors for more than [`MAX_SET_HEADERS`] names, and for a
/// header that frames the response (`Content-Length`, `Transfer-Encoding`, `Connection`...).
pub fn set_headers<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<(HeaderName, HeaderValue)>, SetHeaderError> {
    let mut out: Vec<(HeaderName, Vec<u8>)> = Vec::new();
    for list in values {
        for pair in list.split(|&b| b == b',') {
            let pair = pair.trim_ascii();
            if pair.is_empty() {
                continue;
            }
            let (name, value) = match pair.iter().position(|&b| b == b':') {
                Some(colon) => (&pair[..colon], pair[colon + 1..].trim_ascii()),
                None => (pair, &b""[..]),
            };
            let Ok(name) = HeaderName::from_bytes(name) else {
                continue;
            };
            if FORBIDDEN_SET_HEADERS.contains(&name.as_str()) {
                return Err(SetHeaderError::Forbidden {
                    name: name.as_str().to_owned(),
                });
            }
            let full = out.len() == MAX_SET_HEADERS;
            match out.iter_mut().find(|(n, _)| *n == name) {
                Some((_, joined)) => {
                    joined.push(b',');
                    joined.extend_from_slice(value);
                }
                None if full => {
                    return Err(SetHeaderError::TooMany {
                        max: MAX_SET_HEADERS,
                    })
                }
                None => out.push((name, value.to_vec())),
            }
        }
    }
    // A value that is not a valid header value (a control character) is skipped like a bad
    // name; the request's own header values cannot hold one, so this is defence only.
    Ok(out
        .into_iter()
        .filter_map(|(name, value)| Some((name, HeaderValue::from_bytes(&value).ok()?)))
        .collect())
}

/// A header name as Go's `net/http` shows it (`CanonicalMIMEHeaderKey`): the first letter and
/// every letter after a `-` upper case, the rest lower case (`x-echo-set-header` is
/// `X-Echo-Set-Header`). The echo's JSON uses this spelling, as echo-basic's does.
pub fn canonical_header_name(name: &str) -> String {
    let mut upper = true;
    name.chars()
        .map(|c| {
            let out = if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            upper = c == '-';
            out
        })
        .collect()
}

#[cfg(test)]
mod tests;

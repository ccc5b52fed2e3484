//! TOTP (RFC 6238 over RFC 4226): HMAC-SHA-1, 6 digits, 30-second steps.

use hmac::{Hmac, Mac};
use sha1::Sha1;

/// Step length in seconds.
pub const STEP: i64 = 30;
/// Digits of a code.
pub const DIGITS: u32 = 6;

/// The code for time step `step` with `digits` digits.
#[must_use]
pub fn code(secret: &[u8], step: i64, digits: u32) -> String {
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(&step.to_be_bytes());
    let h = mac.finalize().into_bytes();
    let offset = usize::from(h[19] & 0x0f);
    let binary = (u32::from(h[offset]) & 0x7f) << 24
        | u32::from(h[offset + 1]) << 16
        | u32::from(h[offset + 2]) << 8
        | u32::from(h[offset + 3]);
    let value = binary % 10u32.pow(digits);
    format!("{value:0width$}", width = digits as usize)
}

/// The step of a Unix time.
#[must_use]
pub fn step_at(unix_seconds: i64) -> i64 {
    unix_seconds.div_euclid(STEP)
}

/// The step (within ±1 of `now_step`) whose code is `given`, later than `last_used`.
#[must_use]
pub fn matching_step(secret: &[u8], given: &str, now_step: i64, last_used: i64) -> Option<i64> {
    if given.len() != DIGITS as usize || !given.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    (now_step - 1..=now_step + 1)
        .filter(|s| *s > last_used)
        .find(|s| subtle_eq(code(secret, *s, DIGITS).as_bytes(), given.as_bytes()))
}

fn subtle_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// RFC 4648 base32 without padding.
#[must_use]
pub fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            out.push(char::from(ALPHABET[((buffer >> (bits - 5)) & 31) as usize]));
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

/// Decodes RFC 4648 base32 (no padding, case-insensitive); `None` on any other character.
#[must_use]
pub fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let value = match c.to_ascii_uppercase() {
            b @ b'A'..=b'Z' => b - b'A',
            b @ b'2'..=b'7' => b - b'2' + 26,
            _ => return None,
        };
        buffer = (buffer << 5) | u32::from(value);
        bits += 5;
        if bits >= 8 {
            out.push(u8::try_from((buffer >> (bits - 8)) & 0xff).ok()?);
            bits -= 8;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 6238 appendix B, SHA-1 key: 8-digit codes, and their last 6 digits.
    const SECRET: &[u8] = b"12345678901234567890";

    #[test]
    fn rfc6238_vectors() {
        for (time, expected) in [
            (59, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ] {
            assert_eq!(code(SECRET, step_at(time), 8), expected, "t={time}");
            assert_eq!(code(SECRET, step_at(time), 6), expected[2..], "t={time}");
        }
    }

    #[test]
    fn window_and_replay() {
        let now = step_at(1_234_567_890);
        let current = code(SECRET, now, 6);
        let previous = code(SECRET, now - 1, 6);
        let old = code(SECRET, now - 2, 6);
        assert_eq!(matching_step(SECRET, &current, now, 0), Some(now));
        assert_eq!(matching_step(SECRET, &previous, now, 0), Some(now - 1));
        assert_eq!(matching_step(SECRET, &old, now, 0), None, "outside ±1 step");
        assert_eq!(
            matching_step(SECRET, &current, now, now),
            None,
            "a used step is refused"
        );
        assert_eq!(matching_step(SECRET, "12345", now, 0), None);
        assert_eq!(matching_step(SECRET, "abcdef", now, 0), None);
    }

    #[test]
    fn base32_rfc4648() {
        assert_eq!(base32(b""), "");
        assert_eq!(base32(b"f"), "MY");
        assert_eq!(base32(b"fo"), "MZXQ");
        assert_eq!(base32(b"foo"), "MZXW6");
        assert_eq!(base32(b"foob"), "MZXW6YQ");
        assert_eq!(base32(b"fooba"), "MZXW6YTB");
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        for sample in [&b"12345678901234567890"[..], b"x", b"\x00\xff\x10"] {
            assert_eq!(base32_decode(&base32(sample)).as_deref(), Some(sample));
        }
        assert_eq!(base32_decode("MZ!"), None);
    }
}

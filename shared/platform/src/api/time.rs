//! Conversions between database times and protobuf timestamps.

use chrono::{DateTime, Utc};
use prost_types::Timestamp;

/// A protobuf timestamp of `t`.
#[must_use]
pub fn timestamp(t: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// An optional protobuf timestamp.
#[must_use]
pub fn optional_timestamp(t: Option<DateTime<Utc>>) -> Option<Timestamp> {
    t.map(timestamp)
}

/// Seconds of 0001-01-01T00:00:00Z, the earliest time proto3 JSON can render.
pub const MIN_SECONDS: i64 = -62_135_596_800;
/// Seconds of 9999-12-31T23:59:59Z, the latest time proto3 JSON can render.
pub const MAX_SECONDS: i64 = 253_402_300_799;

/// A protobuf timestamp as a UTC time; `None` when outside the proto3 JSON range
/// (0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z) or when `nanos` is not in
/// 0..=999,999,999. Every Timestamp a request carries goes through here, so nothing stored can
/// later fail to render as JSON.
#[must_use]
pub fn from_timestamp(t: &Timestamp) -> Option<DateTime<Utc>> {
    if !(MIN_SECONDS..=MAX_SECONDS).contains(&t.seconds) || !(0..1_000_000_000).contains(&t.nanos) {
        return None;
    }
    let nanos = u32::try_from(t.nanos).ok()?;
    DateTime::from_timestamp(t.seconds, nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(seconds: i64, nanos: i32) -> Option<DateTime<Utc>> {
        from_timestamp(&Timestamp { seconds, nanos })
    }

    #[test]
    fn only_the_proto3_json_range_is_a_time() {
        assert_eq!(
            ts(MIN_SECONDS, 0).map(|t| t.to_rfc3339()),
            Some("0001-01-01T00:00:00+00:00".to_owned())
        );
        assert_eq!(ts(MIN_SECONDS - 1, 0), None);
        assert_eq!(ts(-62_135_683_200, 0), None, "the value a client stored");
        assert!(ts(MAX_SECONDS, 999_999_999).is_some());
        assert_eq!(ts(MAX_SECONDS + 1, 0), None);
        assert_eq!(ts(0, -1), None);
        assert_eq!(ts(0, 1_000_000_000), None, "no leap-second nanos");
        assert_eq!(
            ts(1_700_000_000, 5).map(|t| t.timestamp()),
            Some(1_700_000_000)
        );
    }
}

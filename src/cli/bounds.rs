//! The valid range of every numeric option, in one place.
//!
//! Each option reaches clap as a flag whatever its spelling (`--flag`, `-o key=value`, the
//! `SCRIBEFS_*` variable, the `[mount]` key: see `options` and `layers`), so the parsers here,
//! named in `args`, check every spelling the same way; the `[storage.s3]` table, which serde
//! reads, goes through [`Bound::parse`] too. A value outside its range is refused, never
//! clamped or wrapped: `--cache-size-mib 99999999999999999999` used to wrap on `<< 20`.

use std::time::Duration;

use crate::store::limits::{S3_MAX_PART_SIZE, S3_MIN_PART_SIZE};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;
const TIB: u64 = 1024 * GIB;

/// How an option's number is written, and so how its range is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A plain count: `8`.
    Count,
    /// Bytes with an optional binary suffix: `8388608`, `8M`, `8MiB`, `8MB`.
    Bytes,
    /// A count of MiB (the cache sizes).
    Mib,
    /// Whole seconds.
    Secs,
    /// An age with a unit: `90s`, `30m`, `24h`, `7d` (seconds without one).
    Age,
    /// Permission bits in octal: `644`.
    Octal,
}

/// An inclusive range of values, in the option's base unit (bytes, seconds, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    pub unit: Unit,
    pub min: u64,
    pub max: u64,
}

/// Why a value was refused; the caller puts the option and the value in front, as in
/// `--part-size 1M is out of range: 5 MiB to 5 GiB`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BoundError {
    #[error("is out of range: {range}")]
    OutOfRange { range: String },
    #[error("is not {what} (valid: {range})")]
    Malformed { what: &'static str, range: String },
}

// --- Connection (every command; flags and `[storage.s3]`) ---
/// Extra attempts. A call ends within twice the request timeout anyway; a hundred retries
/// already pause longer than that (up to 16 minutes) with the default timeout.
pub const MAX_RETRIES: Bound = Bound::new(Unit::Count, 0, 100);
/// One attempt's timeout; a day is far beyond a 5 GiB part on a slow link.
pub const TIMEOUT_SECS: Bound = Bound::new(Unit::Secs, 1, 86_400);
/// Connections to S3; each is a file descriptor, and 0 would block every request.
pub const POOL_SIZE: Bound = Bound::new(Unit::Count, 1, 4096);

// --- mount ---
/// 0 is meaningful: only empty directories are renamed.
pub const RENAME_DIR_LIMIT: Bound = Bound::new(Unit::Count, 0, 1_000_000);
pub const MAX_CACHED_NODES: Bound = Bound::new(Unit::Count, 100, 100_000_000);
/// u32::MAX is (uid_t)-1, which chown(2) reads as "leave unchanged".
pub const ID: Bound = Bound::new(Unit::Count, 0, u32::MAX as u64 - 1);
pub const MODE: Bound = Bound::new(Unit::Octal, 0, 0o7777);
/// 0 would keep no block, so every FUSE read would GET a whole block again.
pub const CACHE_SIZE_MIB: Bound = Bound::new(Unit::Mib, 1, TIB / MIB);
pub const CACHE_DIR_SIZE: Bound = Bound::new(Unit::Mib, 1, 64 * TIB / MIB);
/// The metadata cache's file; a few hundred bytes hold nothing useful, a TiB some ten billion
/// object versions.
pub const METADATA_CACHE_SIZE_MIB: Bound = Bound::new(Unit::Mib, 1, TIB / MIB);
/// Smaller blocks make a GET per page; larger ones are read whole for a 4 KiB read.
pub const BLOCK_SIZE: Bound = Bound::new(Unit::Bytes, 4 * KIB, 256 * MIB);
/// S3 refuses parts outside this range (the last part excepted).
pub const PART_SIZE: Bound = Bound::new(Unit::Bytes, S3_MIN_PART_SIZE, S3_MAX_PART_SIZE);
pub const CONNECT_TIMEOUT_SECS: Bound = Bound::new(Unit::Secs, 1, 3600);
/// Longest finite --metadata-ttl, in seconds: a year (beyond it, say `indefinite`).
pub const MAX_TTL_SECS: u64 = 365 * 86_400;

// --- segments and uploads ---
/// Segments fetched and decoded at once (their bytes bounded by `--max-in-flight-mib`).
pub const PARALLEL: Bound = Bound::new(Unit::Count, 1, 1024);
/// Files copied at once by pull and push.
pub const JOBS: Bound = Bound::new(Unit::Count, 1, 4096);
/// Memory of segments in flight (find, verify) or of uploads (push); what one holds beyond it
/// is one segment or part larger than the whole.
pub const IN_FLIGHT_MIB: Bound = Bound::new(Unit::Mib, 1, TIB / MIB);
pub const AGE: Bound = Bound::new(Unit::Age, 0, 3650 * 86_400);

impl Bound {
    pub const fn new(unit: Unit, min: u64, max: u64) -> Self {
        Bound { unit, min, max }
    }

    /// The value of `text` in the base unit, if it is well formed and within the range.
    pub fn parse(&self, text: &str) -> Result<u64, BoundError> {
        let text = text.trim();
        let (digits, scale) = match self.unit {
            Unit::Bytes => split_size(text).ok_or_else(|| self.malformed())?,
            Unit::Age => split_age(text).ok_or_else(|| self.malformed())?,
            Unit::Octal => return self.octal(text),
            Unit::Count | Unit::Mib | Unit::Secs => (text, 1),
        };
        match number(digits).ok_or_else(|| self.malformed())? {
            Number::Whole(n) => n
                .checked_mul(scale)
                .filter(|v| (self.min..=self.max).contains(v))
                .ok_or_else(|| self.out_of_range()),
            // NaN compares false with everything, so it would pass the range test below.
            Number::Real(x) if x.is_nan() => Err(self.malformed()),
            // Negative, infinite, 1e20, or a fraction: out of range if the range says so,
            // else not a whole number.
            Number::Real(x) => {
                let x = x * scale as f64;
                if x < self.min as f64 || x > self.max as f64 {
                    Err(self.out_of_range())
                } else {
                    Err(self.malformed())
                }
            }
        }
    }

    /// A clap value parser for a field of type `T` (u16, u32, u64, usize), which the range
    /// fits in by construction; clap keeps the [`BoundError`] as the error's source.
    pub fn parser<T>(self) -> impl Fn(&str) -> Result<T, BoundError> + Clone + Send + Sync + 'static
    where
        T: TryFrom<u64> + Clone + Send + Sync + 'static,
    {
        move |text| {
            let value = self.parse(text)?;
            T::try_from(value).map_err(|_| self.out_of_range())
        }
    }

    fn octal(&self, text: &str) -> Result<u64, BoundError> {
        let digits = text.strip_prefix("0o").unwrap_or(text);
        match u64::from_str_radix(digits, 8) {
            Ok(mode) if mode <= self.max => Ok(mode),
            Ok(_) => Err(self.out_of_range()),
            Err(e) if *e.kind() == std::num::IntErrorKind::PosOverflow => Err(self.out_of_range()),
            Err(_) => Err(self.malformed()),
        }
    }

    pub fn out_of_range(&self) -> BoundError {
        BoundError::OutOfRange {
            range: self.range(),
        }
    }

    fn malformed(&self) -> BoundError {
        let what = match self.unit {
            Unit::Count => "a whole number",
            Unit::Bytes => "a size like 8M, 8MiB or 8388608",
            Unit::Mib => "a whole number of MiB",
            Unit::Secs => "a whole number of seconds",
            Unit::Age => "an age like 90s, 30m, 24h or 7d",
            Unit::Octal => "an octal mode like 644",
        };
        BoundError::Malformed {
            what,
            range: self.range(),
        }
    }

    /// The range as the documentation writes it: `5 MiB to 5 GiB`, `1 to 4096`.
    pub fn range(&self) -> String {
        match self.unit {
            Unit::Count => format!("{} to {}", self.min, self.max),
            Unit::Bytes => format!("{} to {}", bytes(self.min), bytes(self.max)),
            Unit::Mib => format!("{} to {} MiB", self.min, self.max),
            Unit::Secs => format!("{} to {} seconds", self.min, self.max),
            Unit::Age => format!("{} to {}", age(self.min), age(self.max)),
            Unit::Octal => format!("{:o} to {:o}", self.min, self.max),
        }
    }
}

/// A number as typed: exactly a u64, or whatever else f64 makes of it (a sign, a fraction, an
/// exponent, a u64 overflow, inf, NaN).
enum Number {
    Whole(u64),
    Real(f64),
}

fn number(text: &str) -> Option<Number> {
    if let Ok(n) = text.parse::<u64>() {
        return Some(Number::Whole(n));
    }
    text.parse::<f64>().ok().map(Number::Real)
}

/// `8M` as ("8", 1 MiB): an optional K, M, G or T, then an optional `iB` or `B`.
fn split_size(text: &str) -> Option<(&str, u64)> {
    let lower = text.to_ascii_lowercase();
    let stem = lower
        .strip_suffix("ib")
        .or_else(|| lower.strip_suffix('b'))
        .unwrap_or(&lower);
    let scale = match stem.chars().last()? {
        'k' => KIB,
        'm' => MIB,
        'g' => GIB,
        't' => TIB,
        // A bare `iB` or `B` with no multiple before it.
        _ if stem.len() < lower.len() && lower.ends_with("ib") => return None,
        _ => 1,
    };
    let digits_len = if scale == 1 {
        stem.len()
    } else {
        stem.len() - 1
    };
    Some((text.get(..digits_len)?.trim(), scale))
}

/// `30m` as ("30", 60): a unit of s, m, h or d, seconds without one.
fn split_age(text: &str) -> Option<(&str, u64)> {
    let (digits, unit) = match text.char_indices().last()? {
        (at, c) if c.is_ascii_alphabetic() => (&text[..at], c),
        _ => (text, 's'),
    };
    let scale = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return None,
    };
    Some((digits.trim(), scale))
}

/// `5242880` as `5 MiB`: the largest binary unit the value is a whole multiple of.
fn bytes(value: u64) -> String {
    for (unit, name) in [(TIB, "TiB"), (GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")] {
        if value >= unit && value.is_multiple_of(unit) {
            return format!("{} {name}", value / unit);
        }
    }
    format!("{value} bytes")
}

fn age(secs: u64) -> String {
    for (unit, name) in [(86_400, "d"), (3600, "h"), (60, "m")] {
        if secs >= unit && secs.is_multiple_of(unit) {
            return format!("{}{name}", secs / unit);
        }
    }
    format!("{secs}s")
}

/// A metadata TTL; `None` is "indefinite".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttl(pub Option<Duration>);

/// `--metadata-ttl`: seconds (fractions allowed) up to a year, or `indefinite`.
pub fn parse_ttl(text: &str) -> Result<Ttl, BoundError> {
    let text = text.trim();
    if text == "indefinite" {
        return Ok(Ttl(None));
    }
    let range = format!("0 to {MAX_TTL_SECS} seconds (a year) or indefinite");
    let secs: f64 = text.parse().map_err(|_| BoundError::Malformed {
        what: "a number of seconds",
        range: range.clone(),
    })?;
    if secs.is_nan() {
        return Err(BoundError::Malformed {
            what: "a number of seconds",
            range,
        });
    }
    // Checked before from_secs_f64, which panics on what does not fit a Duration.
    if !(0.0..=MAX_TTL_SECS as f64).contains(&secs) {
        return Err(BoundError::OutOfRange { range });
    }
    Ok(Ttl(Some(Duration::from_secs_f64(secs))))
}

/// `MIB` MiB in bytes, refused rather than wrapped if it does not fit a u64 (the bounds above
/// keep every parsed value far below that).
pub fn mib_to_bytes(mib: u64) -> Option<u64> {
    mib.checked_mul(MIB)
}

/// The one line a refused value becomes: `--part-size 1M is out of range: 5 MiB to 5 GiB`.
pub fn describe(option: &str, value: &str, reason: &dyn std::fmt::Display) -> String {
    format!("{option} {} {reason}", shown(value))
}

/// A value as typed, quoted only when it would otherwise be invisible or split the line.
fn shown(value: &str) -> String {
    if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        format!("{value:?}")
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out_of_range(bound: Bound, text: &str) -> bool {
        matches!(bound.parse(text), Err(BoundError::OutOfRange { .. }))
    }

    fn malformed(bound: Bound, text: &str) -> bool {
        matches!(bound.parse(text), Err(BoundError::Malformed { .. }))
    }

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(PART_SIZE.parse("8M"), Ok(8 * MIB));
        assert_eq!(PART_SIZE.parse("8MiB"), Ok(8 * MIB));
        assert_eq!(PART_SIZE.parse("8mb"), Ok(8 * MIB));
        assert_eq!(PART_SIZE.parse("5G"), Ok(5 * GIB));
        assert_eq!(PART_SIZE.parse("5242880"), Ok(5 * MIB));
        assert_eq!(BLOCK_SIZE.parse("256K"), Ok(256 * KIB));
        assert_eq!(BLOCK_SIZE.parse("4096B"), Ok(4096));
        for bad in [
            "lots", "", "M", "MiB", "iB", "8X", "1.5.M", "8 M B", "NaN", "nanM",
        ] {
            assert!(malformed(PART_SIZE, bad), "{bad:?}");
        }
    }

    #[test]
    fn sizes_outside_the_range_are_refused_not_wrapped() {
        for bad in [
            "1M",
            "0",
            "-1",
            "-8M",
            "5121M",
            "6G",
            "99999999999999999999",
            "17179869184G",
            "99999999999999999999T",
            "inf",
            "1e20",
        ] {
            assert!(out_of_range(PART_SIZE, bad), "{bad:?}");
        }
        assert!(out_of_range(BLOCK_SIZE, "99999999999"));
        assert!(malformed(PART_SIZE, "5.5M"));
    }

    #[test]
    fn counts_refuse_signs_fractions_and_overflow() {
        assert_eq!(POOL_SIZE.parse("128"), Ok(128));
        assert_eq!(POOL_SIZE.parse(" 8 "), Ok(8));
        assert_eq!(MAX_RETRIES.parse("0"), Ok(0));
        assert!(out_of_range(POOL_SIZE, "0"));
        assert!(out_of_range(POOL_SIZE, "-1"));
        assert!(out_of_range(POOL_SIZE, "99999999999999999999"));
        assert!(out_of_range(POOL_SIZE, "-inf"));
        assert!(malformed(POOL_SIZE, "1.5"));
        assert!(malformed(POOL_SIZE, "NaN"));
        assert!(malformed(POOL_SIZE, "eight"));
        assert!(out_of_range(ID, "4294967295"));
        assert_eq!(ID.parse("4294967294"), Ok(4_294_967_294));
        assert_eq!(CACHE_SIZE_MIB.parse("1048576"), Ok(1_048_576));
        assert!(out_of_range(CACHE_SIZE_MIB, "1048577"));
    }

    #[test]
    fn parsers_fit_their_field_types() {
        assert_eq!(ID.parser::<u32>()("4294967294"), Ok(u32::MAX - 1));
        assert_eq!(MODE.parser::<u16>()("0o755"), Ok(0o755));
        assert!(MODE.parser::<u16>()("999").is_err());
        assert!(MODE.parser::<u16>()("17777").is_err());
        assert!(MODE.parser::<u16>()("77777777777777777777777777").is_err());
        assert_eq!(POOL_SIZE.parser::<usize>()("4096"), Ok(4096));
    }

    #[test]
    fn ages_take_units() {
        assert_eq!(AGE.parse("90"), Ok(90));
        assert_eq!(AGE.parse("30m"), Ok(1800));
        assert_eq!(AGE.parse("7d"), Ok(7 * 86_400));
        assert_eq!(AGE.parse("24h"), Ok(86_400));
        assert!(malformed(AGE, "soon"));
        assert!(malformed(AGE, ""));
        assert!(malformed(AGE, "7w"));
        assert!(malformed(AGE, "d"));
        assert!(out_of_range(AGE, "99999999999999999999d"));
        assert!(out_of_range(AGE, "-1h"));
        assert!(out_of_range(AGE, "3651d"));
    }

    #[test]
    fn ttls_are_bounded_seconds_or_indefinite() {
        assert_eq!(parse_ttl("indefinite"), Ok(Ttl(None)));
        assert_eq!(parse_ttl("1.5"), Ok(Ttl(Some(Duration::from_millis(1500)))));
        assert_eq!(parse_ttl("0"), Ok(Ttl(Some(Duration::ZERO))));
        assert_eq!(
            parse_ttl("31536000"),
            Ok(Ttl(Some(Duration::from_secs(MAX_TTL_SECS))))
        );
        for bad in [
            "1e20",
            "-1",
            "inf",
            "-0.5",
            "31536001",
            "99999999999999999999",
        ] {
            assert!(
                matches!(parse_ttl(bad), Err(BoundError::OutOfRange { .. })),
                "{bad}"
            );
        }
        for bad in ["NaN", "soon", "", "1s"] {
            assert!(
                matches!(parse_ttl(bad), Err(BoundError::Malformed { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn errors_read_as_one_line_naming_option_and_range() {
        let error = PART_SIZE.parse("1M").unwrap_err();
        assert_eq!(
            describe("--part-size", "1M", &error),
            "--part-size 1M is out of range: 5 MiB to 5 GiB"
        );
        let error = POOL_SIZE.parse("x y").unwrap_err();
        assert_eq!(
            describe("--pool-size", "x y", &error),
            "--pool-size \"x y\" is not a whole number (valid: 1 to 4096)"
        );
        assert_eq!(BLOCK_SIZE.range(), "4 KiB to 256 MiB");
        assert_eq!(MODE.range(), "0 to 7777");
        assert_eq!(AGE.range(), "0s to 3650d");
    }
}

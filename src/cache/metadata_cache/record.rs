//! How one entry's columns are encoded: compact, and checksummed so that a row damaged on
//! disk (which SQLite's own structure checks do not see) is never trusted.

use std::time::{SystemTime, UNIX_EPOCH};

use super::{ObjectVersionId, StoredMetadata};
use crate::store::UserMetadata;

/// An ETag as stored: `"<32 lowercase hex>"` and its multipart form `"<32 hex>-<parts>"` as
/// 16 bytes (plus the part count), anything else as it is. A tag byte keeps the two apart, so
/// equal encodings mean equal ETags; lookups compare encodings and never decode them.
pub fn etag_bytes(etag: &str) -> Vec<u8> {
    let inner = etag
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'));
    if let Some(inner) = inner {
        let (hex, parts) = match inner.split_once('-') {
            Some((hex, parts)) => (hex, Some(parts)),
            None => (inner, None),
        };
        let parts_ok = parts.is_none_or(|p| {
            !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && !p.starts_with('0')
        });
        if hex.len() == 32
            && parts_ok
            && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            let mut out = Vec::with_capacity(18);
            out.push(1);
            for pair in hex.as_bytes().chunks(2) {
                out.push((nibble(pair[0]) << 4) | nibble(pair[1]));
            }
            if let Some(parts) = parts {
                out.extend_from_slice(parts.as_bytes());
            }
            return out;
        }
    }
    let mut out = Vec::with_capacity(etag.len() + 1);
    out.push(0);
    out.extend_from_slice(etag.as_bytes());
    out
}

fn nibble(hex: u8) -> u8 {
    match hex {
        b'0'..=b'9' => hex - b'0',
        _ => hex - b'a' + 10,
    }
}

/// LastModified in whole seconds: a HEAD's HTTP date has no fractions, a listing's are cut.
pub fn seconds(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Seconds rounded up: the end of a time window.
pub fn seconds_up(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| {
        let up = d.as_secs() + u64::from(d.subsec_nanos() > 0);
        i64::try_from(up).unwrap_or(i64::MAX)
    })
}

/// SQLite integers are signed; sizes past i64::MAX do not exist in S3.
pub fn size_column(size: u64) -> i64 {
    i64::try_from(size).unwrap_or(i64::MAX)
}

/// A version's columns as stored: (ETag bytes, LastModified seconds, size).
pub fn version_columns(version: &ObjectVersionId) -> (Vec<u8>, i64, i64) {
    (
        etag_bytes(&version.etag),
        seconds(version.last_modified),
        size_column(version.size),
    )
}

/// The three version columns (as [`version_columns`] writes them) of `row` from column `first`.
pub fn stored_version(
    row: &rusqlite::Row<'_>,
    first: usize,
) -> rusqlite::Result<(Vec<u8>, i64, i64)> {
    Ok((row.get(first)?, row.get(first + 1)?, row.get(first + 2)?))
}

/// The metadata and Content-Type as one blob: the Content-Type (flag byte, then length and
/// bytes), then each name and value with its length. Lengths are LEB128 varints.
pub fn encode_stored(stored: &StoredMetadata) -> Vec<u8> {
    let mut out = Vec::new();
    match &stored.content_type {
        None => out.push(0),
        Some(content_type) => {
            out.push(1);
            put_text(&mut out, content_type);
        }
    }
    for (name, value) in &stored.metadata {
        put_text(&mut out, name);
        put_text(&mut out, value);
    }
    out
}

/// The inverse of [`encode_stored`]; `None` for bytes it could not have written.
pub fn decode_stored(mut bytes: &[u8]) -> Option<StoredMetadata> {
    let (&flag, rest) = bytes.split_first()?;
    bytes = rest;
    let content_type = match flag {
        0 => None,
        1 => Some(take_text(&mut bytes)?),
        _ => return None,
    };
    let mut metadata = UserMetadata::new();
    while !bytes.is_empty() {
        let name = take_text(&mut bytes)?;
        let value = take_text(&mut bytes)?;
        metadata.insert(name, value);
    }
    Some(StoredMetadata {
        metadata,
        content_type,
    })
}

fn put_text(out: &mut Vec<u8>, text: &str) {
    let mut len = text.len() as u64;
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(text.as_bytes());
}

fn take_text(bytes: &mut &[u8]) -> Option<String> {
    let mut len = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        len |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            let len = usize::try_from(len).ok()?;
            if len > bytes.len() {
                return None;
            }
            let (text, rest) = bytes.split_at(len);
            *bytes = rest;
            return String::from_utf8(text.to_vec()).ok();
        }
    }
    None
}

/// The checksum a row carries over all its other columns (and its key, so a row cannot pass
/// for another key's).
pub fn row_check(key: &str, etag: &[u8], numbers: &[i64], stored: &[u8]) -> i64 {
    let mut crc = crc32fast::Hasher::new();
    for part in [key.as_bytes(), etag] {
        crc.update(&(part.len() as u64).to_le_bytes());
        crc.update(part);
    }
    for number in numbers {
        crc.update(&number.to_le_bytes());
    }
    crc.update(stored);
    i64::from(crc.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_encode_apart_and_compactly() {
        let single = "\"0123456789abcdef0123456789abcdef\"";
        let multi = "\"0123456789abcdef0123456789abcdef-12\"";
        assert_eq!(etag_bytes(single).len(), 17);
        assert_eq!(etag_bytes(multi).len(), 19);
        let all = [
            single,
            multi,
            "\"0123456789ABCDEF0123456789abcdef\"",
            "\"0123456789abcdef0123456789abcdef-012\"",
            "0123456789abcdef0123456789abcdef",
            "\"x\"",
            "",
        ];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(etag_bytes(a), etag_bytes(b), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn stored_metadata_round_trips_and_garbage_is_refused() {
        let stored = StoredMetadata {
            metadata: UserMetadata::from([
                ("mode".to_string(), "33188".to_string()),
                ("x".repeat(300), "ü".to_string()),
            ]),
            content_type: Some("text/plain".into()),
        };
        assert_eq!(decode_stored(&encode_stored(&stored)), Some(stored));
        let bare = StoredMetadata {
            metadata: UserMetadata::new(),
            content_type: None,
        };
        assert_eq!(encode_stored(&bare), vec![0]);
        assert_eq!(decode_stored(&[0]), Some(bare));
        assert_eq!(decode_stored(&[]), None);
        assert_eq!(decode_stored(&[2]), None);
        assert_eq!(decode_stored(&[0, 5, b'a']), None);
        assert_eq!(decode_stored(&[0, 0xff, 0xff, 0xff]), None);
    }
}

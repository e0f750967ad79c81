//! A stored segment's entries, decoded for Unix tools: the bytes of `segment-<id>.bin` (gzip
//! when the sidecar says `is_compressed`) and its `.meta.json` sidecar become JSON Lines.
//!
//! # Output format
//!
//! One JSON object per entry and per line, sorted by key bytes (keys are unique, so the order is
//! total and the output is the same for the same segment every time):
//!
//! ```text
//! {"key":"tx:00001000:000000","value":"{\"from\":\"acct-0042\",...}"}
//! {"key_base64":"AP8=","value_base64":"3q2+7w=="}
//! ```
//!
//! A key or value whose bytes are valid UTF-8 is a JSON string under `key` / `value`; otherwise
//! it is standard base64 (with padding) under `key_base64` / `value_base64`. Each object has
//! exactly one key field and one value field, key first. `jq -r '.key // (.key_base64 | @base64d)'`
//! reads either.
//!
//! # Checks and bounds
//!
//! The bincode is parsed in place (no copy of keys and values; 32 bytes of index per entry) and
//! strictly: wrong lengths, trailing bytes and duplicate keys are errors, as is a segment whose
//! own id is not the one its key names. With a sidecar, every field it states is compared with
//! the segment ([`SegmentEntries::check_sidecar`]). Decompression stops at a byte limit, so a
//! hostile or corrupt gzip stream cannot exhaust memory. Every error names the segment.

use std::io::{Read, Write};
use std::ops::Range;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use flate2::read::GzDecoder;

use super::codec::SegmentMetadata;

/// Decoded segments larger than this are refused ([`EntriesError::TooLarge`]): the bound on
/// what one decode may allocate, whatever the stored bytes claim.
pub const MAX_DECODED_BYTES: u64 = 1 << 30;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// segment_id, timestamp, entry count and size: four u64.
const FIXED_FIELDS: usize = 4 * 8;
/// The least one entry takes: two u64 lengths.
const MIN_ENTRY: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum EntriesError {
    #[error(
        "segment {id:016x}: the stored bytes are not a complete gzip stream (truncated or corrupt): {reason}"
    )]
    Gzip { id: u64, reason: String },
    #[error("segment {id:016x}: decodes to more than {limit} bytes; refused")]
    TooLarge { id: u64, limit: u64 },
    #[error("segment {id:016x}: not a bincode Segment: {reason} (at byte {offset} of {len})")]
    Bincode {
        id: u64,
        reason: String,
        offset: usize,
        len: usize,
    },
    #[error("segment {id:016x}: key {key} appears twice")]
    DuplicateKey { id: u64, key: String },
    #[error("segment {id:016x}: its bytes hold segment {found:016x}")]
    WrongSegment { id: u64, found: u64 },
    #[error("segment {id:016x}: sidecar is not valid JSON of the ledger's metadata: {reason}")]
    SidecarJson { id: u64, reason: String },
    #[error("segment {id:016x}: does not match its sidecar: {details}")]
    SidecarMismatch { id: u64, details: String },
}

impl EntriesError {
    /// The segment the error is about.
    pub fn segment_id(&self) -> u64 {
        match self {
            EntriesError::Gzip { id, .. }
            | EntriesError::TooLarge { id, .. }
            | EntriesError::Bincode { id, .. }
            | EntriesError::DuplicateKey { id, .. }
            | EntriesError::WrongSegment { id, .. }
            | EntriesError::SidecarJson { id, .. }
            | EntriesError::SidecarMismatch { id, .. } => *id,
        }
    }
}

/// One entry: where its key and value lie in the decoded bytes.
#[derive(Debug, Clone)]
struct Entry {
    key: Range<usize>,
    value: Range<usize>,
}

/// A decoded segment: its fixed fields and its entries sorted by key, over the decoded bytes.
#[derive(Debug, Clone)]
pub struct SegmentEntries {
    /// The id the segment's key names (and, checked, the one its bytes hold).
    pub id: u64,
    pub timestamp: u64,
    /// The segment's `size` field (the ledger's sum of key and value lengths).
    pub size: u64,
    /// Whether the stored bytes were gzip.
    pub was_compressed: bool,
    /// Length of the stored bytes.
    pub stored_len: u64,
    decoded: Bytes,
    entries: Vec<Entry>,
}

/// `segment-{id:016x}.jsonl`: the name of a segment's decoded entries.
pub fn jsonl_file_name(id: u64) -> String {
    format!("segment-{id:016x}.jsonl")
}

/// The id of a decoded-entries file name (any hex length and case, like the segment names).
pub fn parse_jsonl_file_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("segment-")?.strip_suffix(".jsonl")?;
    if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// Parses a sidecar (`segment-<id>.meta.json`). Unknown fields are ignored, as the ledger may
/// add some.
pub fn parse_sidecar(id: u64, json: &[u8]) -> Result<SegmentMetadata, EntriesError> {
    serde_json::from_slice(json).map_err(|e| EntriesError::SidecarJson {
        id,
        reason: e.to_string(),
    })
}

/// The segment's entries as JSON Lines (see the module docs), after every check against the
/// sidecar when there is one. This is what `entries/segment-<id>.jsonl` holds.
pub fn render_jsonl(id: u64, stored: &[u8], sidecar: Option<&[u8]>) -> Result<Bytes, EntriesError> {
    Ok(Bytes::from(decode_checked(id, stored, sidecar)?.to_jsonl()))
}

/// The length of [`render_jsonl`]'s output, without building it (the decode is still needed).
pub fn jsonl_size(id: u64, stored: &[u8], sidecar: Option<&[u8]>) -> Result<u64, EntriesError> {
    Ok(decode_checked(id, stored, sidecar)?.jsonl_len())
}

/// Decodes `stored` as segment `id` and, when a sidecar is given, checks the segment against it.
pub fn decode_checked(
    id: u64,
    stored: &[u8],
    sidecar: Option<&[u8]>,
) -> Result<SegmentEntries, EntriesError> {
    let metadata = sidecar.map(|json| parse_sidecar(id, json)).transpose()?;
    let entries = SegmentEntries::decode(id, stored, metadata.as_ref(), MAX_DECODED_BYTES)
        .map_err(|mut error| {
            // A length the sidecar contradicts is the likeliest cause: say so.
            if let (
                EntriesError::Gzip { reason, .. } | EntriesError::Bincode { reason, .. },
                Some(meta),
            ) = (&mut error, &metadata)
                && meta.compressed_size as u64 != stored.len() as u64
            {
                reason.push_str(&format!(
                    "; {} bytes are stored, the sidecar says {}",
                    stored.len(),
                    meta.compressed_size
                ));
            }
            error
        })?;
    if let Some(metadata) = &metadata {
        entries.check_sidecar(metadata)?;
    }
    Ok(entries)
}

impl SegmentEntries {
    /// Decodes the stored bytes of segment `id`. Whether they are gzip comes from the sidecar
    /// when there is one (a contradiction is reported as a sidecar mismatch), else from the
    /// bytes themselves. At most `max_decoded` bytes are decompressed.
    pub fn decode(
        id: u64,
        stored: &[u8],
        sidecar: Option<&SegmentMetadata>,
        max_decoded: u64,
    ) -> Result<SegmentEntries, EntriesError> {
        let looks_gzip = stored.starts_with(&GZIP_MAGIC);
        // A plain segment starts with its own id; that settles the rare id whose low bytes are
        // the gzip magic.
        let looks_plain = stored.get(..8).is_some_and(|b| b == id.to_le_bytes());
        let compressed = match sidecar {
            Some(meta) if meta.is_compressed && !looks_gzip && looks_plain => {
                return Err(mismatch(
                    id,
                    "is_compressed is true but the bytes are not gzip",
                ));
            }
            Some(meta) if !meta.is_compressed && looks_gzip && !looks_plain => {
                return Err(mismatch(
                    id,
                    "is_compressed is false but the bytes are gzip",
                ));
            }
            Some(meta) => meta.is_compressed,
            None => looks_gzip && !looks_plain,
        };
        let decoded = if compressed {
            let hint = sidecar.map_or(0, |m| m.original_size as u64);
            Bytes::from(gunzip_bounded(id, stored, max_decoded, hint)?)
        } else {
            if stored.len() as u64 > max_decoded {
                return Err(EntriesError::TooLarge {
                    id,
                    limit: max_decoded,
                });
            }
            Bytes::copy_from_slice(stored)
        };
        let mut parsed = parse(id, &decoded)?;
        parsed.was_compressed = compressed;
        parsed.stored_len = stored.len() as u64;
        parsed.decoded = decoded;
        Ok(parsed)
    }

    /// Compares every field the sidecar states with the segment; all differences in one error.
    pub fn check_sidecar(&self, meta: &SegmentMetadata) -> Result<(), EntriesError> {
        let mut details = Vec::new();
        let mut differ = |field: &str, sidecar: String, actual: String| {
            if sidecar != actual {
                details.push(format!(
                    "{field} is {sidecar} in the sidecar, {actual} in the segment"
                ));
            }
        };
        differ("segment_id", hex(meta.segment_id), hex(self.id));
        differ(
            "compressed_size",
            meta.compressed_size.to_string(),
            self.stored_len.to_string(),
        );
        differ(
            "is_compressed",
            meta.is_compressed.to_string(),
            self.was_compressed.to_string(),
        );
        differ(
            "original_size",
            meta.original_size.to_string(),
            self.size.to_string(),
        );
        differ(
            "entry_count",
            meta.entry_count.to_string(),
            self.len().to_string(),
        );
        differ(
            "created_at",
            meta.created_at.to_string(),
            self.timestamp.to_string(),
        );
        if details.is_empty() {
            Ok(())
        } else {
            Err(mismatch(self.id, &details.join("; ")))
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.entries
            .iter()
            .map(|e| (&self.decoded[e.key.clone()], &self.decoded[e.value.clone()]))
    }

    /// The value stored under `key`, by binary search.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.entries
            .binary_search_by(|e| self.decoded[e.key.clone()].cmp(key))
            .ok()
            .map(|i| &self.decoded[self.entries[i].value.clone()])
    }

    /// Writes the JSON Lines; the only errors are `out`'s.
    pub fn write_jsonl(&self, out: &mut impl Write) -> std::io::Result<()> {
        for (key, value) in self.iter() {
            out.write_all(b"{")?;
            write_field(out, "key", key)?;
            out.write_all(b",")?;
            write_field(out, "value", value)?;
            out.write_all(b"}\n")?;
        }
        Ok(())
    }

    pub fn to_jsonl(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.jsonl_len() as usize);
        // Writing to a Vec cannot fail.
        let _ = self.write_jsonl(&mut out);
        out
    }

    /// The length of [`Self::write_jsonl`]'s output, computed without keeping it.
    pub fn jsonl_len(&self) -> u64 {
        let mut counter = Counter(0);
        let _ = self.write_jsonl(&mut counter);
        counter.0
    }
}

/// `"name":"text"` for UTF-8 bytes, else `"name_base64":"..."`.
fn write_field(out: &mut impl Write, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    match std::str::from_utf8(bytes) {
        Ok(text) => {
            write!(out, "\"{name}\":")?;
            // From keeps an I/O error's kind (a broken pipe stays one).
            serde_json::to_writer(&mut *out, text).map_err(std::io::Error::from)
        }
        Err(_) => write!(out, "\"{name}_base64\":\"{}\"", BASE64.encode(bytes)),
    }
}

/// A writer that only counts.
struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn mismatch(id: u64, details: &str) -> EntriesError {
    EntriesError::SidecarMismatch {
        id,
        details: details.to_string(),
    }
}

fn hex(id: u64) -> String {
    format!("{id:016x}")
}

fn gunzip_bounded(id: u64, stored: &[u8], limit: u64, hint: u64) -> Result<Vec<u8>, EntriesError> {
    // The sidecar's size is only a hint for the first allocation, capped like the output.
    let mut out = Vec::with_capacity(hint.min(limit).min(64 << 20) as usize);
    GzDecoder::new(stored)
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| EntriesError::Gzip {
            id,
            reason: e.to_string(),
        })?;
    if out.len() as u64 > limit {
        return Err(EntriesError::TooLarge { id, limit });
    }
    Ok(out)
}

/// A strict reader of bincode 1.3's fixed-int little-endian layout of the ledger's `Segment`.
struct Cursor<'a> {
    id: u64,
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn error(&self, reason: impl Into<String>) -> EntriesError {
        EntriesError::Bincode {
            id: self.id,
            reason: reason.into(),
            offset: self.at,
            len: self.bytes.len(),
        }
    }

    fn u64(&mut self, what: &str) -> Result<u64, EntriesError> {
        let Some(raw) = self.bytes.get(self.at..self.at + 8) else {
            return Err(self.error(format!("ends inside {what}")));
        };
        self.at += 8;
        let mut le = [0u8; 8];
        le.copy_from_slice(raw);
        Ok(u64::from_le_bytes(le))
    }

    /// A `Vec<u8>`: a u64 length, then that many bytes.
    fn byte_vec(&mut self, what: &str) -> Result<Range<usize>, EntriesError> {
        let len = self.u64(what)?;
        let remaining = (self.bytes.len() - self.at) as u64;
        if len > remaining {
            return Err(self.error(format!(
                "{what} claims {len} bytes, only {remaining} remain"
            )));
        }
        let start = self.at;
        self.at += len as usize;
        Ok(start..self.at)
    }
}

fn parse(id: u64, decoded: &[u8]) -> Result<SegmentEntries, EntriesError> {
    let mut cursor = Cursor {
        id,
        bytes: decoded,
        at: 0,
    };
    let segment_id = cursor.u64("segment_id")?;
    if segment_id != id {
        return Err(EntriesError::WrongSegment {
            id,
            found: segment_id,
        });
    }
    let timestamp = cursor.u64("timestamp")?;
    let count = cursor.u64("the entry count")?;
    // Checked before allocating: every entry takes at least its two lengths.
    let room = decoded.len().saturating_sub(FIXED_FIELDS) / MIN_ENTRY;
    if count > room as u64 {
        return Err(cursor.error(format!(
            "claims {count} entries, the bytes can hold at most {room}"
        )));
    }
    let mut entries = Vec::with_capacity(count as usize);
    for n in 0..count {
        let key = cursor.byte_vec(&format!("the key of entry {n}"))?;
        let value = cursor.byte_vec(&format!("the value of entry {n}"))?;
        entries.push(Entry { key, value });
    }
    let size = cursor.u64("size")?;
    if cursor.at != decoded.len() {
        return Err(cursor.error(format!(
            "{} bytes follow the segment",
            decoded.len() - cursor.at
        )));
    }
    entries.sort_unstable_by(|a, b| decoded[a.key.clone()].cmp(&decoded[b.key.clone()]));
    if let Some(pair) = entries
        .windows(2)
        .find(|w| decoded[w[0].key.clone()] == decoded[w[1].key.clone()])
    {
        let key = &decoded[pair[0].key.clone()];
        return Err(EntriesError::DuplicateKey {
            id,
            key: String::from_utf8(key.to_vec())
                .map(|k| format!("{k:?}"))
                .unwrap_or_else(|_| format!("(base64) {}", BASE64.encode(key))),
        });
    }
    Ok(SegmentEntries {
        id,
        timestamp,
        size,
        was_compressed: false,
        stored_len: 0,
        decoded: Bytes::new(),
        entries,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;
    use crate::segment::codec::{Segment, demo_segment};

    fn segment(id: u64, data: HashMap<Vec<u8>, Vec<u8>>) -> Segment {
        let size = data.iter().map(|(k, v)| k.len() + v.len()).sum();
        Segment {
            segment_id: id,
            timestamp: 1_700_000_000 + id,
            data,
            size,
        }
    }

    /// Reads a JSONL line back into raw bytes, either encoding.
    fn field(object: &serde_json::Value, name: &str) -> Vec<u8> {
        if let Some(text) = object.get(name).and_then(|v| v.as_str()) {
            assert!(object.get(format!("{name}_base64")).is_none());
            return text.as_bytes().to_vec();
        }
        let encoded = object[format!("{name}_base64")].as_str().unwrap();
        BASE64.decode(encoded).unwrap()
    }

    fn parse_jsonl(text: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        std::str::from_utf8(text)
            .unwrap()
            .lines()
            .map(|line| {
                let object: serde_json::Value = serde_json::from_str(line).unwrap();
                assert_eq!(object.as_object().unwrap().len(), 2, "{line}");
                (field(&object, "key"), field(&object, "value"))
            })
            .collect()
    }

    #[test]
    fn plain_and_gzip_segments_render_the_same_sorted_lines() {
        let demo = demo_segment(0x1007, 50, 3);
        let mut expected: Vec<_> = demo.data.clone().into_iter().collect();
        expected.sort();
        for compress in [false, true] {
            let archived = demo.archive(compress, 9).unwrap();
            let sidecar = archived.metadata_json();
            let jsonl = render_jsonl(0x1007, &archived.body, Some(&sidecar)).unwrap();
            assert_eq!(parse_jsonl(&jsonl), expected);
            assert_eq!(jsonl.iter().filter(|b| **b == b'\n').count(), 50);
            assert_eq!(
                jsonl_size(0x1007, &archived.body, Some(&sidecar)).unwrap(),
                jsonl.len() as u64
            );
            // Without the sidecar the bytes tell whether they are gzip.
            assert_eq!(render_jsonl(0x1007, &archived.body, None).unwrap(), jsonl);
        }
    }

    #[test]
    fn non_utf8_bytes_are_base64_under_marked_names() {
        let mut data = HashMap::new();
        data.insert(vec![0x00, 0xff], vec![0xde, 0xad, 0xbe, 0xef]);
        data.insert(b"text\"key\n".to_vec(), "caf\u{e9}".as_bytes().to_vec());
        let body = segment(5, data).encode().unwrap();
        let jsonl = String::from_utf8(render_jsonl(5, &body, None).unwrap().to_vec()).unwrap();
        assert_eq!(
            jsonl,
            "{\"key_base64\":\"AP8=\",\"value_base64\":\"3q2+7w==\"}\n\
             {\"key\":\"text\\\"key\\n\",\"value\":\"caf\u{e9}\"}\n"
        );
    }

    #[test]
    fn jsonl_file_names_round_trip() {
        assert_eq!(jsonl_file_name(42), "segment-000000000000002a.jsonl");
        assert_eq!(
            parse_jsonl_file_name(&jsonl_file_name(u64::MAX)),
            Some(u64::MAX)
        );
        assert_eq!(parse_jsonl_file_name("segment-2A.jsonl"), Some(42));
        for bad in [
            "segment-.jsonl",
            "segment-2a.bin",
            "segment-+2a.jsonl",
            "x-2a.jsonl",
        ] {
            assert_eq!(parse_jsonl_file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_writer_error_keeps_its_kind() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut out = Closed;
        for (name, bytes) in [("key", &b"text"[..]), ("value", &[0xff][..])] {
            let error = write_field(&mut out, name, bytes).unwrap_err();
            assert_eq!(error.kind(), std::io::ErrorKind::BrokenPipe);
        }
        // The JSON string itself, written by serde_json after the field name.
        let mut name_only = std::io::Cursor::new([0u8; 6]);
        let error = write_field(&mut name_only, "key", b"text").unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::WriteZero);
    }

    #[test]
    fn get_finds_keys_by_binary_search() {
        let demo = demo_segment(0x2000, 30, 1);
        let body = demo.encode().unwrap();
        let entries = SegmentEntries::decode(0x2000, &body, None, MAX_DECODED_BYTES).unwrap();
        for (key, value) in &demo.data {
            assert_eq!(entries.get(key), Some(value.as_slice()));
        }
        assert_eq!(entries.get(b"tx:absent"), None);
    }

    #[test]
    fn truncated_gzip_names_the_segment() {
        let archived = demo_segment(0x1a, 40, 2).archive(true, 1).unwrap();
        let cut = &archived.body[..archived.body.len() - 20];
        let error = render_jsonl(0x1a, cut, Some(&archived.metadata_json())).unwrap_err();
        assert!(
            matches!(error, EntriesError::Gzip { id: 0x1a, .. }),
            "{error}"
        );
        assert!(
            error.to_string().starts_with("segment 000000000000001a: "),
            "{error}"
        );
        assert!(error.to_string().contains("truncated"), "{error}");
        let sizes = format!(
            "{} bytes are stored, the sidecar says {}",
            cut.len(),
            archived.body.len()
        );
        assert!(error.to_string().contains(&sizes), "{error}");
    }

    #[test]
    fn wrong_bincode_is_a_typed_error_with_its_offset() {
        let body = demo_segment(7, 5, 1).encode().unwrap();
        let error = render_jsonl(7, &body[..body.len() - 3], None).unwrap_err();
        assert!(
            matches!(error, EntriesError::Bincode { id: 7, offset, .. } if offset == body.len() - 8),
            "{error}"
        );
        let mut trailing = body.clone();
        trailing.push(0);
        let error = render_jsonl(7, &trailing, None).unwrap_err();
        assert!(error.to_string().contains("1 bytes follow"), "{error}");
        let error = render_jsonl(8, &body, None).unwrap_err();
        assert!(
            matches!(error, EntriesError::WrongSegment { id: 8, found: 7 }),
            "{error}"
        );
        // A huge entry count is refused before any allocation.
        let mut huge = body[..16].to_vec();
        huge.extend(u64::MAX.to_le_bytes());
        huge.extend([0u8; 8]);
        let error = render_jsonl(7, &huge, None).unwrap_err();
        assert!(error.to_string().contains("at most 0"), "{error}");
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let mut body = Vec::new();
        for word in [9u64, 1, 2] {
            body.extend(word.to_le_bytes());
        }
        for _ in 0..2 {
            body.extend(1u64.to_le_bytes());
            body.push(b'k');
            body.extend(0u64.to_le_bytes());
        }
        body.extend(2u64.to_le_bytes());
        let error = render_jsonl(9, &body, None).unwrap_err();
        assert!(
            matches!(error, EntriesError::DuplicateKey { id: 9, .. }),
            "{error}"
        );
        assert!(error.to_string().contains("\"k\""), "{error}");
    }

    #[test]
    fn every_sidecar_difference_is_listed() {
        let archived = demo_segment(0x30, 12, 4).archive(false, 1).unwrap();
        let mut meta = archived.metadata.clone();
        meta.entry_count = 13;
        meta.compressed_size += 1;
        let json = serde_json::to_vec(&meta).unwrap();
        let error = render_jsonl(0x30, &archived.body, Some(&json)).unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("entry_count is 13 in the sidecar, 12 in the segment"),
            "{text}"
        );
        assert!(text.contains("compressed_size"), "{text}");
        assert!(!text.contains("original_size"), "{text}");

        meta = archived.metadata.clone();
        meta.is_compressed = true;
        let json = serde_json::to_vec(&meta).unwrap();
        let error = render_jsonl(0x30, &archived.body, Some(&json)).unwrap_err();
        assert!(
            error.to_string().contains("is_compressed is true"),
            "{error}"
        );

        let error = render_jsonl(0x30, &archived.body, Some(b"{\"segment_id\":")).unwrap_err();
        assert!(
            matches!(error, EntriesError::SidecarJson { id: 0x30, .. }),
            "{error}"
        );
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_limit() {
        let zeros = crate::segment::codec::gzip(&vec![0u8; 1 << 20]).unwrap();
        let error = SegmentEntries::decode(1, &zeros, None, 4096).unwrap_err();
        assert!(
            matches!(error, EntriesError::TooLarge { id: 1, limit: 4096 }),
            "{error}"
        );
    }

    #[test]
    fn an_id_that_looks_like_gzip_still_decodes_plain() {
        let id = 0x8b1f;
        let body = demo_segment(id, 3, 1).encode().unwrap();
        assert!(body.starts_with(&GZIP_MAGIC));
        assert_eq!(render_jsonl(id, &body, None).unwrap().len() as u64, {
            SegmentEntries::decode(id, &body, None, MAX_DECODED_BYTES)
                .unwrap()
                .jsonl_len()
        });
    }

    fn arbitrary_data() -> impl Strategy<Value = HashMap<Vec<u8>, Vec<u8>>> {
        let bytes = prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..24),
            "[a-z:0-9\"\\\\\u{e9}\n]{0,16}".prop_map(String::into_bytes),
        ];
        proptest::collection::hash_map(bytes.clone(), bytes, 0..40)
    }

    proptest! {
        #[test]
        fn jsonl_round_trips_the_segment(
            id in any::<u64>(),
            data in arbitrary_data(),
            compress in any::<bool>(),
        ) {
            let segment = segment(id, data);
            let archived = segment.archive(compress, 5).unwrap();
            let sidecar = archived.metadata_json();
            let jsonl = render_jsonl(id, &archived.body, Some(&sidecar)).unwrap();
            let mut expected: Vec<_> = segment.data.clone().into_iter().collect();
            expected.sort();
            prop_assert_eq!(parse_jsonl(&jsonl), expected);
            prop_assert_eq!(jsonl_size(id, &archived.body, Some(&sidecar)).unwrap(), jsonl.len() as u64);
            // Stable: a second render is byte for byte the same.
            prop_assert_eq!(render_jsonl(id, &archived.body, None).unwrap(), jsonl);
        }

        #[test]
        fn damaged_bytes_give_errors_never_panics(
            data in arbitrary_data(),
            compress in any::<bool>(),
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
        ) {
            let archived = segment(3, data).archive(compress, 5).unwrap();
            let sidecar = archived.metadata_json();
            let truncated = &archived.body[..cut.index(archived.body.len())];
            prop_assert!(render_jsonl(3, truncated, Some(&sidecar)).is_err());
            let mut flipped = archived.body.clone();
            let at = flip.index(flipped.len());
            flipped[at] ^= 0x5a;
            // A flip may still decode (inside a value); it must never panic.
            let _ = render_jsonl(3, &flipped, Some(&sidecar));
            let _ = render_jsonl(3, &flipped, None);
        }
    }
}

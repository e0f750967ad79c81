//! Upload checksums, which make a server refuse (BadDigest) bytes damaged on the way instead of
//! storing them: CRC32C (`x-amz-checksum-crc32c`, hardware-accelerated, ~20x cheaper than MD5,
//! and combinable, so the parts' CRCs give the whole object's without reading it again) or
//! Content-MD5 for servers that know no other. And the MD5 an ETag names, against which a
//! downloaded whole object is checked.

use md5::{Digest, Md5};

/// The CRC32C (Castagnoli) of `body`.
pub fn crc32c(body: &[u8]) -> u32 {
    crc_fast::crc32_iscsi(body)
}

/// The CRC32C of `a` followed by `b`, from their CRCs and `b`'s length alone.
pub fn crc32c_combine(a: u32, b: u32, b_len: u64) -> u32 {
    crc_fast::checksum_combine(
        crc_fast::CrcAlgorithm::Crc32Iscsi,
        u64::from(a),
        u64::from(b),
        b_len,
    ) as u32
}

/// The `x-amz-checksum-crc32c` value of a CRC: base64 of its four big-endian bytes.
pub fn crc32c_header(crc: u32) -> String {
    base64_of(&crc.to_be_bytes())
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// The `Content-MD5` header value of `body`.
pub fn content_md5(body: &[u8]) -> String {
    base64_of(&Md5::digest(body))
}

/// The MD5 (lower-case hex) an ETag names, if it is a plain 32-hex digest. Multipart ETags
/// (`"hex-N"`) and anything else name no digest of the bytes.
pub fn etag_md5(etag: &str) -> Option<String> {
    let hex = etag.trim_matches('"');
    (hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_lowercase())
}

/// A digest in lower-case hex, as an ETag spells an MD5.
pub fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Standard base64 with padding, as Content-MD5 carries a digest.
pub fn base64_of(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_check_value_and_combines() {
        // The CRC-32C check value of "123456789" (RFC 3720, B.4).
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        // S3's own example header for "hello world": `yZRlqg==`.
        assert_eq!(crc32c_header(crc32c(b"hello world")), "yZRlqg==");
        let (a, b) = (b"hello ".as_slice(), b"world".as_slice());
        assert_eq!(
            crc32c_combine(crc32c(a), crc32c(b), b.len() as u64),
            crc32c(b"hello world")
        );
    }

    #[test]
    fn matches_the_rfc_examples_and_s3s_known_digest() {
        assert_eq!(base64_of(b""), "");
        assert_eq!(base64_of(b"f"), "Zg==");
        assert_eq!(base64_of(b"fo"), "Zm8=");
        assert_eq!(base64_of(b"foo"), "Zm9v");
        assert_eq!(base64_of(b"foobar"), "Zm9vYmFy");
        // `echo -n hello | openssl md5 -binary | base64`
        assert_eq!(content_md5(b"hello"), "XUFAKrxLKna5cZ2REBfFkg==");
    }

    #[test]
    fn only_plain_md5_etags_name_a_digest() {
        assert_eq!(
            hex(&Md5::digest(b"hello")),
            "5d41402abc4b2a76b9719d911017c592"
        );
        assert_eq!(
            etag_md5("\"5D41402ABC4B2A76B9719D911017C592\"").as_deref(),
            Some("5d41402abc4b2a76b9719d911017c592")
        );
        assert_eq!(etag_md5("\"5d41402abc4b2a76b9719d911017c592-2\""), None);
        assert_eq!(etag_md5("\"5d41402abc4b2a76b9719d911017c59z\""), None);
        assert_eq!(etag_md5(""), None);
    }
}

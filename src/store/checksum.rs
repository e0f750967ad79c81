//! Content-MD5: the base64 MD5 of a body, sent with every PutObject and UploadPart so that the
//! server refuses (BadDigest) bytes damaged on the way instead of storing them; and the MD5 an
//! ETag names, against which a downloaded whole object is checked.

use md5::{Digest, Md5};

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

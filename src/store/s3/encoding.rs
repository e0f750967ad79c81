//! The two URL encodings S3 asks of a client: `x-amz-copy-source` must be percent-encoded, and
//! listings requested with `encoding-type=url` come back encoded the way botocore decodes them
//! (`+` for a space, `%XX` for the rest), which keeps keys with control characters listable.

/// Percent-encodes everything except unreserved characters and `/`.
pub(super) fn encode_copy_source(bucket: &str, key: &str) -> String {
    let mut encoded = String::with_capacity(bucket.len() + key.len() + 1);
    for byte in bucket
        .bytes()
        .chain(std::iter::once(b'/'))
        .chain(key.bytes())
    {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~' | b'/') {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// Decodes a listing value sent with `EncodingType=url`; `None` if it is not valid UTF-8
/// once decoded. A `%` not followed by two hex digits is kept literally.
pub(super) fn decode_listing_value(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let escaped = match bytes.get(at + 1..at + 3) {
            Some(&[high, low]) if bytes[at] == b'%' => hex_pair(high, low),
            _ => None,
        };
        match (bytes[at], escaped) {
            (_, Some(byte)) => {
                decoded.push(byte);
                at += 2;
            }
            (b'+', None) => decoded.push(b' '),
            (other, None) => decoded.push(other),
        }
        at += 1;
    }
    String::from_utf8(decoded).ok()
}

fn hex_pair(high: u8, low: u8) -> Option<u8> {
    let digit = |c: u8| (c as char).to_digit(16);
    Some((digit(high)? * 16 + digit(low)?) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_source_keeps_slashes_and_encodes_the_rest() {
        assert_eq!(
            encode_copy_source("b", "dir/a b+c%é"),
            "b/dir/a%20b%2Bc%25%C3%A9"
        );
        assert_eq!(
            encode_copy_source("b", "segments/segment-01.bin"),
            "b/segments/segment-01.bin"
        );
    }

    #[test]
    fn listing_values_decode_like_botocore() {
        assert_eq!(
            decode_listing_value("a+b%2Bc%20d").as_deref(),
            Some("a b+c d")
        );
        assert_eq!(
            decode_listing_value("ctl%01%C3%A9").as_deref(),
            Some("ctl\u{1}é")
        );
        assert_eq!(decode_listing_value("100%").as_deref(), Some("100%"));
        assert_eq!(decode_listing_value("%zz").as_deref(), Some("%zz"));
        assert_eq!(decode_listing_value("%FF"), None);
    }
}

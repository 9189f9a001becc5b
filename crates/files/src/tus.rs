//! The tus 1.0.0 headers this server understands, parsed and validated, and the ids it issues.
//!
//! Everything here is a pure function of header text, so the rules for untrusted input are
//! tested in one place without a server.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tidings_core::{CoreError, CoreResult};

/// The protocol version spoken, for `Tus-Resumable` and `Tus-Version`.
pub const VERSION: &str = "1.0.0";
/// The extensions implemented, exactly; `OPTIONS` advertises this list.
pub const EXTENSIONS: &str =
    "creation,creation-with-upload,termination,checksum,expiration,concatenation";
/// The checksum algorithms accepted in `Upload-Checksum`.
pub const CHECKSUM_ALGORITHMS: &str = "sha1,sha256";
/// Longest `Upload-Metadata` accepted: metadata is echoed on every `HEAD`, so it stays small.
pub const MAX_METADATA_BYTES: usize = 4096;
/// Longest file name kept, in characters.
pub const MAX_NAME_CHARS: usize = 255;

/// A fresh id for an upload or a file: 128 random bits as 32 lowercase hex characters.
pub fn new_id() -> String {
    let bytes: [u8; 16] = rand::random();
    hex(&bytes)
}

/// Whether `id` has the shape [`new_id`] produces. Anything else (`../x`, `%2e%2e`, empty) is
/// refused before it reaches storage, where ids become object paths.
pub fn is_valid_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Lowercase hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Validated `Upload-Metadata`: the header as sent (echoed on `HEAD`) and the file name in it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metadata {
    pub raw: String,
    pub name: String,
}

/// Parses `Upload-Metadata`: comma-separated pairs of a key (no spaces or commas, not empty,
/// unique) and an optional base64 value. The file name is taken from `filename` (or `name`),
/// reduced to its last path component and stripped of control characters.
pub fn parse_metadata(header: &str) -> CoreResult<Metadata> {
    if header.len() > MAX_METADATA_BYTES {
        return Err(CoreError::invalid("Upload-Metadata is too long"));
    }
    let mut keys: Vec<&str> = Vec::new();
    let mut name = String::new();
    if header.trim().is_empty() {
        return Ok(Metadata::default());
    }
    for pair in header.split(',') {
        let pair = pair.trim();
        let (key, value) = match pair.split_once(' ') {
            Some((key, value)) => (key, value.trim()),
            None => (pair, ""),
        };
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
            return Err(CoreError::invalid("Upload-Metadata has an invalid key"));
        }
        if keys.contains(&key) {
            return Err(CoreError::invalid("Upload-Metadata repeats a key"));
        }
        keys.push(key);
        let decoded = STANDARD
            .decode(value)
            .map_err(|_| CoreError::invalid("Upload-Metadata values must be base64"))?;
        if (key == "filename" || (key == "name" && name.is_empty())) && !decoded.is_empty() {
            let text = String::from_utf8(decoded)
                .map_err(|_| CoreError::invalid("the file name must be UTF-8"))?;
            name = clean_name(&text);
        }
    }
    Ok(Metadata {
        raw: header.trim().to_owned(),
        name,
    })
}

/// The last path component of a client-supplied name, without control characters, so it is
/// safe in a `Content-Disposition` header and meaningless as a path.
fn clean_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = last
        .chars()
        .filter(|c| !c.is_control() && *c != '"')
        .take(MAX_NAME_CHARS)
        .collect();
    match cleaned.as_str() {
        "." | ".." => String::new(),
        _ => cleaned,
    }
}

/// A checksum algorithm of the checksum extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChecksumAlgorithm {
    Sha1,
    Sha256,
}

/// `Upload-Checksum`: the algorithm and the expected digest of one request's body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checksum {
    pub algorithm: ChecksumAlgorithm,
    pub digest: Vec<u8>,
}

/// Parses `Upload-Checksum: <algorithm> <base64 digest>`.
pub fn parse_checksum(header: &str) -> CoreResult<Checksum> {
    let (algorithm, digest) = header
        .trim()
        .split_once(' ')
        .ok_or_else(|| CoreError::invalid("Upload-Checksum must be '<algorithm> <base64>'"))?;
    let (algorithm, length) = match algorithm {
        "sha1" => (ChecksumAlgorithm::Sha1, 20),
        "sha256" => (ChecksumAlgorithm::Sha256, 32),
        _ => {
            return Err(CoreError::invalid(
                "unsupported checksum algorithm; use sha1 or sha256",
            ));
        }
    };
    let digest = STANDARD
        .decode(digest.trim())
        .map_err(|_| CoreError::invalid("the checksum must be base64"))?;
    if digest.len() != length {
        return Err(CoreError::invalid("the checksum has the wrong length"));
    }
    Ok(Checksum { algorithm, digest })
}

/// `Upload-Concat`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Concat {
    /// A part of a parallel upload.
    Partial,
    /// The concatenation of these partial uploads (their ids), in order.
    Final(Vec<String>),
}

/// Most parts one final upload may concatenate.
pub const MAX_PARTS: usize = 1000;

/// Parses `Upload-Concat: partial` or `Upload-Concat: final;<url> <url> ...`, where each url
/// ends in an upload id (`/api/v1/uploads/<id>` or a full URL).
pub fn parse_concat(header: &str) -> CoreResult<Concat> {
    let header = header.trim();
    if header == "partial" {
        return Ok(Concat::Partial);
    }
    let Some(list) = header.strip_prefix("final;") else {
        return Err(CoreError::invalid(
            "Upload-Concat must be 'partial' or 'final;<urls>'",
        ));
    };
    let mut ids = Vec::new();
    for url in list.split_whitespace() {
        let id = url
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default();
        if !is_valid_id(id) {
            return Err(CoreError::invalid("Upload-Concat names an invalid upload"));
        }
        ids.push(id.to_owned());
    }
    if ids.is_empty() || ids.len() > MAX_PARTS {
        return Err(CoreError::invalid(
            "Upload-Concat must name 1 to 1000 uploads",
        ));
    }
    Ok(Concat::Final(ids))
}

/// The content type of a file, sniffed from its first bytes; the client's claim is ignored.
pub fn sniff_content_type(head: &[u8]) -> &'static str {
    infer::get(head).map_or("application/octet-stream", |kind| kind.mime_type())
}

/// Width and height of a raster image, from its header alone.
pub fn image_size(content_type: &str, head: &[u8]) -> Option<(u32, u32)> {
    if !is_safe_inline(content_type) {
        return None;
    }
    let size = imagesize::blob_size(head).ok()?;
    Some((
        u32::try_from(size.width).ok()?,
        u32::try_from(size.height).ok()?,
    ))
}

/// Types a browser may render inline from our origin: raster images, which cannot run script.
/// (SVG is excluded on purpose: it can.)
pub fn is_safe_inline(content_type: &str) -> bool {
    matches!(
        content_type,
        "image/png" | "image/jpeg" | "image/gif" | "image/webp" | "image/avif" | "image/bmp"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_hex_and_path_like_ids_are_refused() {
        let id = new_id();
        assert!(is_valid_id(&id), "{id}");
        assert_ne!(new_id(), id);
        for bad in [
            "",
            "../../etc/passwd",
            "..%2f..%2fetc",
            "0123456789abcdef0123456789abcdeF",
            "0123456789abcdef0123456789abcde",
            "0123456789abcdef0123456789abcdef0",
            "0123456789abcdef/123456789abcdef",
        ] {
            assert!(!is_valid_id(bad), "{bad:?} must be refused");
        }
    }

    #[test]
    fn metadata_rules() {
        let ok = parse_metadata("filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential")
            .unwrap();
        assert_eq!(ok.name, "world_domination_plan.pdf");
        // "../../etc/passwd" keeps only its last component.
        assert_eq!(
            parse_metadata("filename Li4vLi4vZXRjL3Bhc3N3ZA==")
                .unwrap()
                .name,
            "passwd"
        );
        assert_eq!(parse_metadata("").unwrap(), Metadata::default());
        for bad in [
            "filename not*base64!",
            "filename aGk=,filename aGk=",
            ",",
            "a b c",
            "filename /w==",
        ] {
            assert!(parse_metadata(bad).is_err(), "{bad:?} must be refused");
        }
        assert!(parse_metadata(&"k".repeat(MAX_METADATA_BYTES + 1)).is_err());
    }

    #[test]
    fn checksum_rules() {
        let sha1 = parse_checksum("sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=").unwrap();
        assert_eq!(
            (sha1.algorithm, sha1.digest.len()),
            (ChecksumAlgorithm::Sha1, 20)
        );
        for bad in [
            "md5 1B2M2Y8AsgTpgAmY7PhCfg==",
            "sha1",
            "sha1 !!!",
            "sha256 Kq5sNclPz7QV2+lfQIuc6R7oRu0=",
        ] {
            assert!(parse_checksum(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn concat_rules() {
        let a = new_id();
        let b = new_id();
        assert_eq!(parse_concat("partial").unwrap(), Concat::Partial);
        assert_eq!(
            parse_concat(&format!(
                "final;/api/v1/uploads/{a} http://h/api/v1/uploads/{b}"
            ))
            .unwrap(),
            Concat::Final(vec![a.clone(), b])
        );
        for bad in [
            "final;",
            "final;/api/v1/uploads/../x",
            "whole",
            &format!("final {a}"),
        ] {
            assert!(parse_concat(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn only_raster_images_are_inline() {
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
        assert_eq!(sniff_content_type(png), "image/png");
        assert!(is_safe_inline(sniff_content_type(png)));
        let png_1x1 = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\x02\x80\0\0\x01\xe0\x08\x06\0\0\0";
        assert_eq!(image_size("image/png", png_1x1), Some((640, 480)));
        assert_eq!(image_size("application/octet-stream", png_1x1), None);
        let html = b"<!DOCTYPE html><script>alert(1)</script>";
        assert!(!is_safe_inline(sniff_content_type(html)));
        assert!(!is_safe_inline("image/svg+xml"));
    }
}

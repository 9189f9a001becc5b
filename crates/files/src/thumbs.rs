//! Image thumbnails: a few fixed sizes, rendered once on first request and kept in object
//! storage beside the bytes they were made from.
//!
//! Rendering needs the whole image in memory, so only images up to
//! `files.max_thumbnail_source_bytes` get thumbnails, decoding runs under `image::Limits`
//! (no decompression bombs), and at most [`RENDERERS`] render at once on blocking threads.

use object_store::path::Path;

/// The edge lengths thumbnails fit in, in pixels: a list avatar, a chat bubble, a preview.
pub const THUMBNAIL_SIZES: [u32; 3] = [96, 320, 800];

/// Thumbnails rendered at the same time, at most.
pub(crate) const RENDERERS: usize = 2;

/// The most pixels a source image may have (about 40 megapixels, a large phone photo).
const MAX_SOURCE_PIXELS: u64 = 40_000_000;

/// Where the thumbnail of `px` of the bytes with this hash is kept. Thumbnails are addressed
/// by content like the bytes, so identical uploads share them.
pub(crate) fn thumb_path(sha256: &[u8; 32], px: u32) -> Path {
    let hex = crate::tus::hex(sha256);
    Path::from(format!("thumbs/{}/{hex}-{px}", &hex[..2]))
}

/// The formats we decode (the safe raster types the upload sniffer recognises).
pub fn can_thumbnail(content_type: &str) -> bool {
    matches!(
        content_type,
        "image/png" | "image/jpeg" | "image/gif" | "image/webp"
    )
}

/// Why an image could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum ThumbError {
    #[error("the image is too large to make a thumbnail of")]
    TooLarge,
    #[error("the image could not be decoded")]
    Undecodable,
}

/// A rendered thumbnail.
#[derive(Clone, Debug)]
pub struct Rendered {
    pub bytes: Vec<u8>,
    /// `image/jpeg`, or `image/png` when the source has transparency.
    pub content_type: &'static str,
}

/// Decodes `source` and renders it to fit within `px`×`px`, keeping its aspect ratio (images
/// already smaller keep their size). Opaque images become JPEG, others PNG.
pub fn render(source: &[u8], px: u32) -> Result<Rendered, ThumbError> {
    use image::ImageReader;
    use std::io::Cursor;
    let mut reader = ImageReader::new(Cursor::new(source))
        .with_guessed_format()
        .map_err(|_| ThumbError::Undecodable)?;
    let (width, height) = reader
        .into_dimensions()
        .map_err(|_| ThumbError::Undecodable)?;
    if u64::from(width) * u64::from(height) > MAX_SOURCE_PIXELS {
        return Err(ThumbError::TooLarge);
    }
    reader = ImageReader::new(Cursor::new(source))
        .with_guessed_format()
        .map_err(|_| ThumbError::Undecodable)?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    // Room for the decoded image at 16 bits per channel plus working buffers.
    limits.max_alloc = Some(MAX_SOURCE_PIXELS * 8 * 2);
    reader.limits(limits);
    let image = reader.decode().map_err(|e| match e {
        image::ImageError::Limits(_) => ThumbError::TooLarge,
        _ => ThumbError::Undecodable,
    })?;
    let small = if image.width() > px || image.height() > px {
        image.thumbnail(px, px)
    } else {
        image
    };
    let mut out = Cursor::new(Vec::new());
    let content_type = if small.color().has_alpha() {
        small
            .write_to(&mut out, image::ImageFormat::Png)
            .map_err(|_| ThumbError::Undecodable)?;
        "image/png"
    } else {
        let rgb = image::DynamicImage::ImageRgb8(small.to_rgb8());
        let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 82);
        rgb.write_with_encoder(encoder)
            .map_err(|_| ThumbError::Undecodable)?;
        "image/jpeg"
    };
    Ok(Rendered {
        bytes: out.into_inner(),
        content_type,
    })
}

/// The content type of a stored thumbnail, from its first bytes.
pub(crate) fn stored_type(bytes: &[u8]) -> &'static str {
    if bytes.starts_with(b"\x89PNG") {
        "image/png"
    } else {
        "image/jpeg"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32, alpha: bool) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        let image = if alpha {
            image::DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(
                width,
                height,
                image::Rgba([10, 20, 30, 128]),
            ))
        } else {
            image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(width, height, |x, y| {
                image::Rgb([(x % 256) as u8, (y % 256) as u8, 90])
            }))
        };
        image.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    /// CRC-32 (IEEE), to keep the doctored PNG header valid.
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for byte in bytes {
            crc ^= u32::from(*byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn fits_the_box_and_keeps_the_aspect_ratio() {
        let rendered = render(&png(1000, 500, false), 320).unwrap();
        assert_eq!(rendered.content_type, "image/jpeg");
        let thumb = image::load_from_memory(&rendered.bytes).unwrap();
        assert_eq!((thumb.width(), thumb.height()), (320, 160));
    }

    #[test]
    fn small_images_keep_their_size_and_transparency_keeps_png() {
        let rendered = render(&png(40, 30, true), 96).unwrap();
        assert_eq!(rendered.content_type, "image/png");
        assert_eq!(stored_type(&rendered.bytes), "image/png");
        let thumb = image::load_from_memory(&rendered.bytes).unwrap();
        assert_eq!((thumb.width(), thumb.height()), (40, 30));
    }

    #[test]
    fn refuses_garbage_and_giants() {
        assert!(matches!(
            render(b"not an image at all", 96),
            Err(ThumbError::Undecodable)
        ));
        // A PNG header that claims 100,000 × 100,000 pixels: refused before decoding.
        let mut giant = png(1, 1, false);
        giant[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        giant[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        let crc = crc32(&giant[12..29]);
        giant[29..33].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(render(&giant, 96), Err(ThumbError::TooLarge)));
    }
}

//! Feeds arbitrary bytes to what the server reads from an uploaded file's contents: the type
//! sniffer, the image-size reader and the thumbnail renderer (which decodes PNG, JPEG, GIF and
//! WebP on the server). None may panic; a rendered thumbnail must fit its box and be what its
//! content type says.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidings_files::thumbs::{self, ThumbError};
use tidings_files::tus;

/// The smallest thumbnail edge the server renders.
const PX: u32 = 96;

fuzz_target!(|data: &[u8]| {
    let content_type = tus::sniff_content_type(data);
    let size = tus::image_size(content_type, data);
    if size.is_some() {
        assert!(tus::is_safe_inline(content_type), "{content_type}");
    }
    if !thumbs::can_thumbnail(content_type) {
        return;
    }
    match thumbs::render(data, PX) {
        Ok(rendered) => {
            let is_png = rendered.bytes.starts_with(b"\x89PNG");
            assert_eq!(is_png, rendered.content_type == "image/png");
            let out = image::load_from_memory(&rendered.bytes).expect("our thumbnail decodes");
            assert!(out.width() <= PX && out.height() <= PX);
            assert!(out.width() > 0 && out.height() > 0);
        }
        Err(ThumbError::TooLarge | ThumbError::Undecodable) => {}
    }
});

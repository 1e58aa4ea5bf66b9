//! What we read from EXIF: the orientation tag (kamadak-exif parses the TIFF structure).

use exif::{In, Reader, Tag};

/// The EXIF orientation (1..=8) in a raw TIFF-structured EXIF block; 1 when it is missing,
/// out of range or the block is unreadable.
pub fn orientation(exif: &[u8]) -> u8 {
    Reader::new()
        .read_raw(exif.to_vec())
        .ok()
        .and_then(|exif| {
            exif.get_field(Tag::Orientation, In::PRIMARY)
                .and_then(|f| f.value.get_uint(0))
        })
        .and_then(|o| u8::try_from(o).ok())
        .filter(|o| (1..=8).contains(o))
        .unwrap_or(1)
}

//! JPEG decoding through libjpeg-turbo with DCT-domain scaling (shrink-on-load: a 24 MP
//! photo decoded at 1/8 costs a fraction of a full decode), and the marker walk that finds
//! the EXIF and ICC segments without decoding anything.

use image::{DynamicImage, RgbImage};
use turbojpeg::{Colorspace, Decompressor, Image, PixelFormat, ScalingFactor};

use super::EngineError;
use crate::worker::options::ImageFormat;

/// The metadata segments of a JPEG, borrowed from the source.
#[derive(Debug, Default)]
pub struct Segments<'a> {
    /// The TIFF-structured EXIF payload of the first `APP1 Exif` segment.
    pub exif: Option<&'a [u8]>,
    /// The ICC profile reassembled from its `APP2 ICC_PROFILE` chunks, in sequence order.
    pub icc: Option<Vec<u8>>,
}

/// Walks the markers up to the first scan.
pub fn segments(source: &[u8]) -> Segments<'_> {
    let mut out = Segments::default();
    let mut icc_chunks: Vec<(u8, &[u8])> = Vec::new();
    let mut at = 2usize;
    while let Some(&[0xFF, marker]) = source.get(at..at + 2) {
        // Fill bytes and standalone markers carry no length.
        if marker == 0xFF {
            at += 1;
            continue;
        }
        if (0xD0..=0xD8).contains(&marker) || marker == 0x01 {
            at += 2;
            continue;
        }
        // Start of scan: no metadata follows that we care about.
        if marker == 0xDA || marker == 0xD9 {
            break;
        }
        let Some(len) = source
            .get(at + 2..at + 4)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        else {
            break;
        };
        let Some(body) = source.get(at + 4..(at + 2 + len).max(at + 4)) else {
            break;
        };
        match marker {
            0xE1 if out.exif.is_none() && body.starts_with(b"Exif\0\0") => {
                out.exif = Some(&body[6..]);
            }
            0xE2 if body.starts_with(b"ICC_PROFILE\0") && body.len() > 14 => {
                icc_chunks.push((body[12], &body[14..]));
            }
            _ => {}
        }
        at += 2 + len;
    }
    if !icc_chunks.is_empty() {
        icc_chunks.sort_by_key(|(seq, _)| *seq);
        out.icc = Some(
            icc_chunks
                .into_iter()
                .flat_map(|(_, c)| c.iter().copied())
                .collect(),
        );
    }
    out
}

/// Decodes at 1/`shrink` scale (1, 2, 4 or 8). `Ok(None)` means libjpeg-turbo can't give
/// us RGB for this file (CMYK/YCCK): the caller falls back to another decoder.
///
/// `max_scans` (0 = no limit) is libjpeg-turbo's scan limit: a progressive JPEG costs a
/// pass over every block per scan, so a few hundred kilobytes of empty scans can keep a core
/// busy for minutes in one uninterruptible call. `probed` is the size the resolution limit
/// was checked against: a frame header claiming another size is refused before the pixel
/// buffer is allocated.
///
/// # Errors
/// [`EngineError::Corrupt`] when libjpeg-turbo rejects the data, the sizes disagree or the
/// scan limit is passed.
pub fn decode(
    source: &[u8],
    shrink: u32,
    max_scans: u32,
    probed: (u32, u32),
) -> Result<Option<DynamicImage>, EngineError> {
    let corrupt = |e: turbojpeg::Error| EngineError::corrupt(ImageFormat::Jpeg, e);
    let mut decompressor = Decompressor::new().map_err(corrupt)?;
    if max_scans > 0 {
        decompressor.set_scan_limit(max_scans).map_err(corrupt)?;
    }
    let header = decompressor.read_header(source).map_err(corrupt)?;
    super::decode::check_size(ImageFormat::Jpeg, (header.width, header.height), probed)?;
    if matches!(header.colorspace, Colorspace::CMYK | Colorspace::YCCK) {
        return Ok(None);
    }
    let factor = ScalingFactor::new(1, shrink.clamp(1, 8) as usize);
    decompressor.set_scaling_factor(factor).map_err(corrupt)?;
    let scaled = header.scaled(factor);
    let (width, height) = (scaled.width, scaled.height);
    let mut pixels = vec![0u8; width * height * 3];
    let image = Image {
        pixels: pixels.as_mut_slice(),
        width,
        pitch: width * 3,
        height,
        format: PixelFormat::RGB,
    };
    decompressor.decompress(source, image).map_err(corrupt)?;
    let width = u32::try_from(width).map_err(|e| EngineError::corrupt(ImageFormat::Jpeg, e))?;
    let height = u32::try_from(height).map_err(|e| EngineError::corrupt(ImageFormat::Jpeg, e))?;
    let rgb = RgbImage::from_raw(width, height, pixels)
        .expect("buffer sized as width * height * 3 above");
    Ok(Some(DynamicImage::ImageRgb8(rgb)))
}

/// How many scans (start-of-scan markers) a JPEG has, found without decoding: inside
/// entropy-coded data a 0xFF byte is always followed by 0x00 or a restart marker, so every
/// `FF DA` is a scan header (or, in crafted metadata, counts against the file).
pub fn count_scans(source: &[u8]) -> usize {
    source.windows(2).filter(|w| w == &[0xFF, 0xDA]).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_exif_and_multi_chunk_icc() {
        let mut jpeg = vec![0xFF, 0xD8];
        let mut segment = |marker: u8, body: &[u8]| {
            jpeg.extend([0xFF, marker]);
            jpeg.extend(u16::try_from(body.len() + 2).unwrap().to_be_bytes());
            jpeg.extend(body);
        };
        segment(0xE1, b"Exif\0\0MM\0*");
        segment(0xE2, b"ICC_PROFILE\0\x02\x02world");
        segment(0xE2, b"ICC_PROFILE\0\x01\x02hello ");
        jpeg.extend([0xFF, 0xDA, 0, 2]);
        let s = segments(&jpeg);
        assert_eq!(s.exif, Some(&b"MM\0*"[..]));
        assert_eq!(s.icc.as_deref(), Some(&b"hello world"[..]));
    }

    #[test]
    fn truncated_markers_are_not_a_panic() {
        for cut in 0..12 {
            let _ = segments(&b"\xFF\xD8\xFF\xE1\x00\x10Exif\0\0MM"[..cut]);
        }
    }
}

//! Puts a TIFF-structured EXIF block (from [`super::exif_out`]) into an encoded result:
//! an `APP1 Exif` segment for JPEG, an `EXIF` chunk for WebP through libwebp's muxer (which
//! also turns a simple WebP into the extended format: `VP8X` with the EXIF flag and the
//! canvas size, the image chunks, then `EXIF`, RIFF size fixed). PNG needs nothing here:
//! its encoder writes the `eXIf` chunk itself.
//!
//! Metadata never costs a result: when a block can't be embedded the result goes out
//! without it.

use std::ffi::c_int;

use libwebp_sys as sys;

/// The JPEG with an `APP1 Exif` segment holding `exif`. It goes after the JFIF `APP0`
/// segment libjpeg-turbo writes first, where libjpeg (and so libvips, imgproxy's writer)
/// puts application markers: the file stays valid JFIF and every EXIF reader finds it.
/// Unchanged when `encoded` isn't a JPEG or `exif` doesn't fit one segment.
pub fn jpeg(mut encoded: Vec<u8>, exif: &[u8]) -> Vec<u8> {
    const HEADER: &[u8] = b"Exif\0\0";
    // The segment length counts its own two bytes.
    let Ok(length) = u16::try_from(2 + HEADER.len() + exif.len()) else {
        return encoded;
    };
    if !encoded.starts_with(&[0xFF, 0xD8]) {
        return encoded;
    }
    let at = match encoded.get(2..6) {
        Some(&[0xFF, 0xE0, hi, lo]) => {
            let end = 4 + usize::from(u16::from_be_bytes([hi, lo]));
            if end <= encoded.len() { end } else { 2 }
        }
        _ => 2,
    };
    let mut segment = Vec::with_capacity(2 + usize::from(length));
    segment.extend([0xFF, 0xE1]);
    segment.extend(length.to_be_bytes());
    segment.extend(HEADER);
    segment.extend(exif);
    encoded.splice(at..at, segment);
    encoded
}

/// The WebP (still or animated) with an `EXIF` chunk holding `exif`, or `None` when
/// libwebp's muxer rejects the file.
#[allow(unsafe_code)] // FFI: see the SAFETY comments inside
pub fn webp(encoded: &[u8], exif: &[u8]) -> Option<Vec<u8>> {
    let bitstream = sys::WebPData {
        bytes: encoded.as_ptr(),
        size: encoded.len(),
    };
    // SAFETY: `bitstream` describes `encoded`, which outlives the call; with `copy_data`
    // set the mux copies what it keeps, so it borrows nothing afterwards.
    let mux =
        unsafe { sys::WebPMuxCreateInternal(&bitstream, 1, sys::WEBP_MUX_ABI_VERSION as c_int) };
    let mux = Mux::new(mux)?;
    let chunk = sys::WebPData {
        bytes: exif.as_ptr(),
        size: exif.len(),
    };
    // SAFETY: `mux` is a live mux; the fourcc is a NUL-terminated four-character string;
    // `chunk` describes `exif`, copied by the mux (`copy_data` set).
    let set = unsafe { sys::WebPMuxSetChunk(mux.0, c"EXIF".as_ptr(), &chunk, 1) };
    if set != sys::WebPMuxError::WEBP_MUX_OK {
        return None;
    }
    let mut assembled = sys::WebPData::default();
    // SAFETY: `mux` is live; `assembled` is an empty WebPData the call fills with memory
    // allocated by libwebp, which is freed below.
    let status = unsafe { sys::WebPMuxAssemble(mux.0, &mut assembled) };
    let bytes =
        (status == sys::WebPMuxError::WEBP_MUX_OK && !assembled.bytes.is_null()).then(|| {
            // SAFETY: on success libwebp set `bytes`/`size` to one allocation it owns.
            unsafe { std::slice::from_raw_parts(assembled.bytes, assembled.size) }.to_vec()
        });
    // SAFETY: frees what WebPMuxAssemble allocated (a null pointer is fine for WebPFree).
    unsafe { sys::WebPDataClear(&mut assembled) };
    bytes
}

/// A libwebp mux object, deleted on drop.
struct Mux(*mut sys::WebPMux);

impl Mux {
    fn new(raw: *mut sys::WebPMux) -> Option<Self> {
        (!raw.is_null()).then_some(Self(raw))
    }
}

#[allow(unsafe_code)] // FFI: see the SAFETY comments inside
impl Drop for Mux {
    fn drop(&mut self) {
        // SAFETY: the pointer came non-null from WebPMuxCreateInternal and is deleted once.
        unsafe { sys::WebPMuxDelete(self.0) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segments(jpeg: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        let mut at = 2;
        while let Some(&[0xFF, marker, hi, lo]) = jpeg.get(at..at + 4) {
            if marker == 0xDA {
                break;
            }
            let len = usize::from(u16::from_be_bytes([hi, lo]));
            out.push((marker, jpeg[at + 4..at + 2 + len].to_vec()));
            at += 2 + len;
        }
        out
    }

    #[test]
    fn jpeg_segment_follows_jfif() {
        let mut jfif = vec![0xFF, 0xD8, 0xFF, 0xE0, 0, 4, b'J', b'F'];
        jfif.extend([0xFF, 0xDA, 0, 2]);
        let out = jpeg(jfif, b"MM\0*");
        let found = segments(&out);
        assert_eq!(found[0], (0xE0, b"JF".to_vec()));
        assert_eq!(found[1], (0xE1, b"Exif\0\0MM\0*".to_vec()));
    }

    #[test]
    fn jpeg_segment_without_jfif_follows_soi() {
        let out = jpeg(vec![0xFF, 0xD8, 0xFF, 0xDA, 0, 2], b"II*\0");
        assert_eq!(segments(&out)[0], (0xE1, b"Exif\0\0II*\0".to_vec()));
        // A lying APP0 length doesn't move the segment past the end.
        let out = jpeg(vec![0xFF, 0xD8, 0xFF, 0xE0, 0xFF, 0xFF], b"II*\0");
        assert_eq!(&out[2..4], &[0xFF, 0xE1]);
    }

    #[test]
    fn jpeg_leaves_what_it_cannot_hold() {
        let source = vec![0xFF, 0xD8, 0xFF, 0xDA, 0, 2];
        assert_eq!(jpeg(source.clone(), &[0; 65_528]), source);
        assert_eq!(jpeg(b"not a jpeg".to_vec(), b"MM\0*"), b"not a jpeg");
        assert_eq!(
            jpeg(source.clone(), &[0; 65_527]).len(),
            source.len() + 65_535 + 2
        );
    }

    #[test]
    fn webp_gains_an_exif_chunk() {
        let exif = b"MM\0*\0\0\0\x08\0\0\0\0\0\0";
        for (layout, channels) in [(webp::PixelLayout::Rgb, 3), (webp::PixelLayout::Rgba, 4)] {
            // Alpha 128: the lossy RGBA encode has an `ALPH` chunk to keep.
            let pixels = vec![128u8; 8 * 8 * channels];
            let encoded = webp::Encoder::new(&pixels, layout, 8, 8)
                .encode(80.0)
                .to_vec();
            let out = webp(&encoded, exif).unwrap();
            assert_eq!(&out[12..16], b"VP8X");
            let riff = u32::from_le_bytes([out[4], out[5], out[6], out[7]]) as usize;
            assert_eq!(riff + 8, out.len());
            let mut decoder =
                image::codecs::webp::WebPDecoder::new(std::io::Cursor::new(&out)).unwrap();
            use image::ImageDecoder;
            assert_eq!(decoder.exif_metadata().unwrap().as_deref(), Some(&exif[..]));
            let image = image::load_from_memory(&out).unwrap();
            assert_eq!(image.color().has_alpha(), channels == 4);
        }
    }

    #[test]
    fn animated_webp_keeps_its_frames() {
        let exif = b"II*\0\x08\0\0\0\0\0\0\0\0\0";
        let config = webp::WebPConfig::new().unwrap();
        let mut encoder = webp::AnimEncoder::new(8, 8, &config);
        let (red, blue) = ([200u8, 0, 0].repeat(64), [0u8, 0, 200].repeat(64));
        encoder.add_frame(webp::AnimFrame::from_rgb(&red, 8, 8, 0));
        encoder.add_frame(webp::AnimFrame::from_rgb(&blue, 8, 8, 100));
        let encoded = encoder.try_encode().unwrap().to_vec();
        let out = webp(&encoded, exif).unwrap();
        let mut decoder =
            image::codecs::webp::WebPDecoder::new(std::io::Cursor::new(&out)).unwrap();
        use image::{AnimationDecoder, ImageDecoder};
        assert!(decoder.has_animation());
        assert_eq!(decoder.exif_metadata().unwrap().as_deref(), Some(&exif[..]));
        assert_eq!(decoder.into_frames().count(), 2);
    }

    #[test]
    fn webp_rejects_garbage() {
        assert_eq!(webp(b"RIFF\0\0\0\0WEBPjunk", b"MM\0*"), None);
        assert_eq!(webp(b"", b"MM\0*"), None);
    }
}

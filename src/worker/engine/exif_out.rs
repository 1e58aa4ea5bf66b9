//! The EXIF a result carries, decided as imgproxy decides it: `strip_metadata` (default on)
//! keeps only the source's Copyright and Artist tags when `keep_copyright` is on (default),
//! nothing when it is off; `strip_metadata:false` keeps the source's EXIF with the embedded
//! thumbnail dropped and the Orientation reset to 1 when the pixels were turned. The block
//! is written with kamadak-exif's TIFF writer; [`super::embed`] puts it into the container.
//!
//! Metadata never costs a result: EXIF that can't be read or written is left out.

use std::io::Cursor;

use exif::experimental::Writer;
use exif::{Context, Field, In, Reader, Tag, Value};

use crate::worker::options::{ImageFormat, ProcessingOptions};

/// The largest EXIF block a result gets: what one JPEG `APP1` segment holds (65535 bytes
/// minus its 2-byte length and the 6-byte `Exif\0\0` header). The same cap for every format
/// keeps a result's metadata independent of its format.
pub const MAX_EXIF_BYTES: usize = 65_527;

/// TIFF `SubIFDs`: offsets into the source's TIFF structure that mean nothing once the
/// fields are rewritten elsewhere.
const SUB_IFDS: Tag = Tag(Context::Tiff, 0x014A);

/// The EXIF decision for one result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResultExif {
    /// Write this TIFF-structured block (no `Exif\0\0` prefix).
    Write(Vec<u8>),
    /// Write none, for this reason.
    Omit(Omitted),
}

/// Why a result carries no EXIF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Omitted {
    /// The result format gets no EXIF from us: GIF, BMP and ICO have no place for it, the
    /// `libavif` crate offers no EXIF setter, the `image` crate's TIFF encoder takes none.
    Format(ImageFormat),
    /// The source has no EXIF (or it is in a format we don't read it from, e.g. AVIF).
    NoSource,
    /// `strip_metadata` with `keep_copyright` off.
    Stripped,
    /// `strip_metadata` with `keep_copyright`, but the source has neither Copyright nor
    /// Artist.
    NoCopyright,
    /// The source's EXIF is not a TIFF structure kamadak-exif can read any of.
    Unreadable,
    /// Nothing in the source's EXIF can be written back (unknown value types only).
    NothingWritable,
    /// The block would be larger than [`MAX_EXIF_BYTES`].
    TooLarge,
    /// kamadak-exif's writer refused the fields.
    WriteFailed,
}

/// What the pipeline made of the source, for the fields that describe the pixels.
#[derive(Debug, Clone, Copy)]
pub struct ResultImage {
    pub format: ImageFormat,
    pub width: u32,
    pub height: u32,
    /// The pixels were turned or mirrored (EXIF orientation applied, `rotate` or `flip`),
    /// so a kept Orientation tag would make viewers turn them again.
    pub turned: bool,
}

impl ResultExif {
    /// The block to write, if any.
    pub fn into_block(self) -> Option<Vec<u8>> {
        match self {
            Self::Write(block) => Some(block),
            Self::Omit(_) => None,
        }
    }
}

/// Whether [`super::encode`] can put EXIF into `format`.
pub fn carries_exif(format: ImageFormat) -> bool {
    matches!(
        format,
        ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::Webp
    )
}

/// Which of the source's EXIF (`source`, TIFF-structured) goes into the result.
pub fn for_result(
    source: Option<&[u8]>,
    po: &ProcessingOptions,
    result: &ResultImage,
) -> ResultExif {
    if !carries_exif(result.format) {
        return ResultExif::Omit(Omitted::Format(result.format));
    }
    let Some(source) = source else {
        return ResultExif::Omit(Omitted::NoSource);
    };
    if po.strip_metadata && !po.keep_copyright {
        return ResultExif::Omit(Omitted::Stripped);
    }
    let Some(exif) = read(source) else {
        return ResultExif::Omit(Omitted::Unreadable);
    };
    let fields = if po.strip_metadata {
        let fields = copyright_fields(&exif);
        if fields.is_empty() {
            return ResultExif::Omit(Omitted::NoCopyright);
        }
        fields
    } else {
        let fields = kept_fields(&exif, result);
        if fields.is_empty() {
            return ResultExif::Omit(Omitted::NothingWritable);
        }
        fields
    };
    write(&fields, exif.little_endian())
}

/// Parses as much of the block as can be parsed: a broken sub-IFD or entry costs that
/// part, not the rest. `None` when not a single field could be read.
fn read(source: &[u8]) -> Option<exif::Exif> {
    Reader::new()
        .continue_on_error(true)
        .read_raw(source.to_vec())
        .or_else(|e| e.distill_partial_result(|_ignored| {}))
        .ok()
        .filter(|exif| exif.fields().len() > 0)
}

/// A field the writer can encode: the primary image's (IFD1 is the embedded thumbnail,
/// which would be stale), with a known value type.
fn writable(field: &Field) -> bool {
    field.ifd_num == In::PRIMARY && !matches!(field.value, Value::Unknown(..))
}

/// imgproxy's `keep_copyright`: IFD0's Copyright and Artist, nothing else.
fn copyright_fields(exif: &exif::Exif) -> Vec<Field> {
    [Tag::Copyright, Tag::Artist]
        .into_iter()
        .filter_map(|tag| exif.get_field(tag, In::PRIMARY))
        .filter(|field| writable(field))
        .cloned()
        .collect()
}

/// `strip_metadata:false`: every writable primary-image field once, with the Orientation
/// reset when the pixels were turned and the pixel dimensions set to the result's (as
/// libvips does).
fn kept_fields(exif: &exif::Exif, result: &ResultImage) -> Vec<Field> {
    let mut seen = std::collections::HashSet::new();
    exif.fields()
        .filter(|field| writable(field) && field.tag != SUB_IFDS && seen.insert(field.tag))
        .map(|field| {
            let value = match field.tag {
                Tag::Orientation if result.turned => Value::Short(vec![1]),
                Tag::PixelXDimension => Value::Long(vec![result.width]),
                Tag::PixelYDimension => Value::Long(vec![result.height]),
                _ => field.value.clone(),
            };
            Field {
                tag: field.tag,
                ifd_num: field.ifd_num,
                value,
            }
        })
        .collect()
}

/// Bytes a value takes in the TIFF structure (an upper bound on what it adds to the block
/// besides its 12-byte entry).
fn value_len(value: &Value) -> usize {
    match value {
        Value::Byte(v) | Value::Undefined(v, _) => v.len(),
        Value::SByte(v) => v.len(),
        Value::Ascii(strings) => strings.iter().map(|s| s.len() + 1).sum(),
        Value::Short(v) => v.len() * 2,
        Value::SShort(v) => v.len() * 2,
        Value::Long(v) => v.len() * 4,
        Value::SLong(v) => v.len() * 4,
        Value::Float(v) => v.len() * 4,
        Value::Rational(v) => v.len() * 8,
        Value::SRational(v) => v.len() * 8,
        Value::Double(v) => v.len() * 8,
        Value::Unknown(..) => 0,
    }
}

/// Serialises `fields` in the source's byte order. The size is bounded before writing:
/// entries of a hostile block may all point at the same large value.
fn write(fields: &[Field], little_endian: bool) -> ResultExif {
    let estimate: usize = fields.iter().map(|f| 12 + value_len(&f.value) + 1).sum();
    if estimate > MAX_EXIF_BYTES {
        return ResultExif::Omit(Omitted::TooLarge);
    }
    let mut writer = Writer::new();
    for field in fields {
        writer.push_field(field);
    }
    let mut out = Cursor::new(Vec::new());
    if writer.write(&mut out, little_endian).is_err() {
        return ResultExif::Omit(Omitted::WriteFailed);
    }
    let block = out.into_inner();
    if block.len() > MAX_EXIF_BYTES {
        return ResultExif::Omit(Omitted::TooLarge);
    }
    ResultExif::Write(block)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::options::Defaults;

    fn ascii(tag: Tag, text: &str) -> Field {
        Field {
            tag,
            ifd_num: In::PRIMARY,
            value: Value::Ascii(vec![text.as_bytes().to_vec()]),
        }
    }

    fn short(tag: Tag, value: u16) -> Field {
        Field {
            tag,
            ifd_num: In::PRIMARY,
            value: Value::Short(vec![value]),
        }
    }

    /// A camera-like block: Copyright, Artist, Make, Orientation 6, a pixel width in the
    /// Exif IFD and an IFD1 (thumbnail) entry.
    fn source() -> Vec<u8> {
        let fields = [
            ascii(Tag::Copyright, "© Test"),
            ascii(Tag::Artist, "Someone"),
            ascii(Tag::Make, "Cam"),
            short(Tag::Orientation, 6),
            Field {
                tag: Tag::PixelXDimension,
                ifd_num: In::PRIMARY,
                value: Value::Long(vec![4000]),
            },
            Field {
                tag: Tag::ImageDescription,
                ifd_num: In::THUMBNAIL,
                value: Value::Ascii(vec![b"thumb".to_vec()]),
            },
        ];
        let mut writer = Writer::new();
        fields.iter().for_each(|f| writer.push_field(f));
        let mut out = Cursor::new(Vec::new());
        writer.write(&mut out, true).unwrap();
        out.into_inner()
    }

    fn po(strip_metadata: bool, keep_copyright: bool) -> ProcessingOptions {
        let mut po = ProcessingOptions::new(&Defaults::default());
        po.strip_metadata = strip_metadata;
        po.keep_copyright = keep_copyright;
        po
    }

    const JPEG: ResultImage = ResultImage {
        format: ImageFormat::Jpeg,
        width: 30,
        height: 40,
        turned: true,
    };

    fn parsed(decision: ResultExif) -> exif::Exif {
        let ResultExif::Write(block) = decision else {
            panic!("expected a block, got {decision:?}");
        };
        Reader::new().read_raw(block).unwrap()
    }

    fn text(exif: &exif::Exif, tag: Tag) -> Option<Vec<u8>> {
        match &exif.get_field(tag, In::PRIMARY)?.value {
            Value::Ascii(strings) => strings.first().cloned(),
            _ => None,
        }
    }

    #[test]
    fn keep_copyright_keeps_only_copyright_and_artist() {
        let exif = parsed(for_result(Some(&source()), &po(true, true), &JPEG));
        assert_eq!(text(&exif, Tag::Copyright).unwrap(), "© Test".as_bytes());
        assert_eq!(text(&exif, Tag::Artist).unwrap(), b"Someone");
        assert_eq!(exif.fields().count(), 2);
        assert!(exif.little_endian(), "the source's byte order is kept");
    }

    #[test]
    fn stripping_without_copyright_writes_nothing() {
        assert_eq!(
            for_result(Some(&source()), &po(true, false), &JPEG),
            ResultExif::Omit(Omitted::Stripped)
        );
    }

    #[test]
    fn keep_copyright_without_copyright_writes_nothing() {
        let mut writer = Writer::new();
        let make = ascii(Tag::Make, "Cam");
        writer.push_field(&make);
        let mut out = Cursor::new(Vec::new());
        writer.write(&mut out, false).unwrap();
        assert_eq!(
            for_result(Some(&out.into_inner()), &po(true, true), &JPEG),
            ResultExif::Omit(Omitted::NoCopyright)
        );
    }

    #[test]
    fn keeping_metadata_resets_orientation_and_drops_the_thumbnail() {
        let exif = parsed(for_result(Some(&source()), &po(false, false), &JPEG));
        assert_eq!(text(&exif, Tag::Make).unwrap(), b"Cam");
        assert_eq!(text(&exif, Tag::Copyright).unwrap(), "© Test".as_bytes());
        let orientation = exif.get_field(Tag::Orientation, In::PRIMARY).unwrap();
        assert_eq!(orientation.value.get_uint(0), Some(1));
        let width = exif.get_field(Tag::PixelXDimension, In::PRIMARY).unwrap();
        assert_eq!(width.value.get_uint(0), Some(30));
        assert!(exif.fields().all(|f| f.ifd_num == In::PRIMARY));
    }

    #[test]
    fn unturned_pixels_keep_the_orientation() {
        let result = ResultImage {
            turned: false,
            ..JPEG
        };
        let exif = parsed(for_result(Some(&source()), &po(false, true), &result));
        let orientation = exif.get_field(Tag::Orientation, In::PRIMARY).unwrap();
        assert_eq!(orientation.value.get_uint(0), Some(6));
    }

    #[test]
    fn formats_without_exif_and_sources_without_it() {
        let gif = ResultImage {
            format: ImageFormat::Gif,
            ..JPEG
        };
        assert_eq!(
            for_result(Some(&source()), &po(false, true), &gif),
            ResultExif::Omit(Omitted::Format(ImageFormat::Gif))
        );
        assert_eq!(
            for_result(None, &po(false, true), &JPEG),
            ResultExif::Omit(Omitted::NoSource)
        );
    }

    #[test]
    fn broken_blocks_are_left_out_or_salvaged() {
        for broken in [
            &b""[..],
            b"MM\0*",
            b"II*\0\xff\xff\xff\xff",
            b"garbage garbage",
        ] {
            assert_eq!(
                for_result(Some(broken), &po(false, true), &JPEG),
                ResultExif::Omit(Omitted::Unreadable),
                "{broken:?}"
            );
        }
        // Cut inside the IFD1 entries: IFD0 is intact and kept.
        let mut cut = source();
        let ifd1 = cut.windows(5).position(|w| w == b"thumb").unwrap();
        cut.truncate(ifd1 - 4);
        let exif = parsed(for_result(Some(&cut), &po(true, true), &JPEG));
        assert_eq!(text(&exif, Tag::Artist).unwrap(), b"Someone");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(500))]

        /// A camera block with bytes overwritten anywhere: no panic, and whatever is
        /// written parses back and fits the cap.
        #[test]
        fn damaged_blocks_never_panic(
            damage in proptest::collection::vec((0usize..400, proptest::prelude::any::<u8>()), 1..8),
            strip in proptest::prelude::any::<bool>(),
        ) {
            let mut block = source();
            for (at, byte) in damage {
                let at = at % block.len();
                block[at] = byte;
            }
            if let ResultExif::Write(out) = for_result(Some(&block), &po(strip, true), &JPEG) {
                proptest::prop_assert!(out.len() <= MAX_EXIF_BYTES);
                proptest::prop_assert!(Reader::new().read_raw(out).is_ok());
            }
        }
    }

    #[test]
    fn oversized_blocks_are_left_out() {
        let note = Field {
            tag: Tag::MakerNote,
            ifd_num: In::PRIMARY,
            value: Value::Undefined(vec![0; MAX_EXIF_BYTES], 0),
        };
        let mut writer = Writer::new();
        writer.push_field(&note);
        let mut out = Cursor::new(Vec::new());
        writer.write(&mut out, false).unwrap();
        assert_eq!(
            for_result(Some(&out.into_inner()), &po(false, true), &JPEG),
            ResultExif::Omit(Omitted::TooLarge)
        );
    }
}

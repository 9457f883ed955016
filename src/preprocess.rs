//! Image bytes to model input: a limits-checked decode, EXIF orientation, RGB, a Pillow-compatible
//! bicubic resize and ImageNet normalisation into an NCHW `f32` tensor. Pure: no I/O, no state.

use std::io::Cursor;

use fast_image_resize::images::Image as ResizeImage;
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};

/// ImageNet channel means (RGB) the model was trained with.
pub const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations (RGB) the model was trained with.
pub const STD: [f32; 3] = [0.229, 0.224, 0.225];
/// The number of colour channels of the model input (layout NCHW).
pub const CHANNELS: usize = 3;

/// The image formats the service accepts.
pub const ACCEPTED_FORMATS: [ImageFormat; 6] = [
    ImageFormat::Jpeg,
    ImageFormat::Png,
    ImageFormat::WebP,
    ImageFormat::Gif,
    ImageFormat::Bmp,
    ImageFormat::Tiff,
];

/// Why an image could not be turned into a tensor.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImageError {
    /// The bytes are not an image any supported decoder accepts, or are truncated or corrupt.
    #[error("{0}")]
    Invalid(String),
    /// The image decodes to more pixels than allowed.
    #[error("{0}")]
    TooLarge(String),
}

/// Decodes `bytes` into upright RGB pixels for a model input of `width` x `height`.
///
/// A JPEG far larger than the input is decoded at 1/2, 1/4 or 1/8 scale straight from its DCT
/// coefficients, skipping most of the decoding work; the scale keeps at least twice the input's
/// resolution on both axes, so the bicubic resize that follows still does the final filtering.
/// Everything else, and every failure of that path, goes through [`decode`].
pub fn decode_for_input(
    bytes: &[u8],
    max_pixels: u64,
    width: u32,
    height: u32,
) -> Result<RgbImage, ImageError> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF])
        && let Some(rgb) = decode_jpeg_scaled(bytes, max_pixels, width.max(height))?
    {
        return Ok(rgb);
    }
    decode(bytes, max_pixels)
}

/// The scaled JPEG path: `Ok(None)` when scaling would not pay or the decoder cannot serve it.
fn decode_jpeg_scaled(
    bytes: &[u8],
    max_pixels: u64,
    side: u32,
) -> Result<Option<RgbImage>, ImageError> {
    let mut decoder = jpeg_decoder::Decoder::new(bytes);
    if decoder.read_info().is_err() {
        return Ok(None);
    }
    let Some(info) = decoder.info() else {
        return Ok(None);
    };
    let (w, h) = (u32::from(info.width), u32::from(info.height));
    check_pixels(w, h, max_pixels)?;
    let keep = 2 * side;
    let Some(denominator) = [8u32, 4, 2]
        .into_iter()
        .find(|d| w.div_ceil(*d) >= keep && h.div_ceil(*d) >= keep)
    else {
        return Ok(None);
    };
    if info.pixel_format == jpeg_decoder::PixelFormat::CMYK32 {
        return Ok(None);
    }
    let (Ok(sw), Ok(sh)) = (
        u16::try_from(w.div_ceil(denominator)),
        u16::try_from(h.div_ceil(denominator)),
    ) else {
        return Ok(None);
    };
    let Ok((out_w, out_h)) = decoder.scale(sw, sh) else {
        return Ok(None);
    };
    let Ok(pixels) = decoder.decode() else {
        return Ok(None);
    };
    let (out_w, out_h) = (u32::from(out_w), u32::from(out_h));
    let image = match info.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 => {
            RgbImage::from_raw(out_w, out_h, pixels).map(DynamicImage::ImageRgb8)
        }
        jpeg_decoder::PixelFormat::L8 => {
            image::GrayImage::from_raw(out_w, out_h, pixels).map(DynamicImage::ImageLuma8)
        }
        _ => None,
    };
    let Some(mut image) = image else {
        return Ok(None);
    };
    if let Some(orientation) = decoder
        .exif_data()
        .and_then(image::metadata::Orientation::from_exif_chunk)
    {
        image.apply_orientation(orientation);
    }
    Ok(Some(into_rgb(image)))
}

/// Decodes `bytes` into upright RGB pixels, refusing images over `max_pixels` before decoding.
pub fn decode(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, ImageError> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ImageError::Invalid(format!("cannot read the image: {e}")))?;
    let format = reader.format().ok_or_else(|| {
        ImageError::Invalid(
            "the data is not a recognised image: send JPEG, PNG, WebP, GIF, BMP or TIFF".into(),
        )
    })?;
    if !ACCEPTED_FORMATS.contains(&format) {
        return Err(ImageError::Invalid(format!(
            "{format:?} images are not supported: send JPEG, PNG, WebP, GIF, BMP or TIFF"
        )));
    }
    let mut reader = reader;
    reader.limits(decoder_limits(max_pixels));
    let mut decoder = reader.into_decoder().map_err(|e| classify(format, e))?;
    let (width, height) = decoder.dimensions();
    check_pixels(width, height, max_pixels)?;
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).map_err(|e| classify(format, e))?;
    image.apply_orientation(orientation);
    Ok(into_rgb(image))
}

/// The pixels as 8-bit RGB, without a copy when they already are; alpha is dropped, as Pillow's
/// `convert('RGB')` drops it.
fn into_rgb(image: DynamicImage) -> RgbImage {
    match image {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.to_rgb8(),
    }
}

/// The decoder's own limits: a backstop for formats whose header understates what they allocate.
fn decoder_limits(max_pixels: u64) -> image::Limits {
    let mut limits = image::Limits::default();
    // 16-bit RGBA is the widest pixel a supported decoder produces; allow it twice over for the
    // decoder's working buffers.
    limits.max_alloc = Some(max_pixels.saturating_mul(8).saturating_mul(2));
    limits
}

fn check_pixels(width: u32, height: u32, max_pixels: u64) -> Result<(), ImageError> {
    if width == 0 || height == 0 {
        return Err(ImageError::Invalid(format!(
            "the image has no pixels ({width}x{height})"
        )));
    }
    let pixels = u64::from(width) * u64::from(height);
    if pixels > max_pixels {
        return Err(ImageError::TooLarge(format!(
            "the image is {width}x{height} ({pixels} pixels), over the limit of {max_pixels} pixels"
        )));
    }
    Ok(())
}

fn classify(format: ImageFormat, err: image::ImageError) -> ImageError {
    match err {
        image::ImageError::Limits(e) => {
            ImageError::TooLarge(format!("the image exceeds the decoding limits: {e}"))
        }
        e => ImageError::Invalid(format!("cannot decode the {format:?} image: {e}")),
    }
}

/// Resizes RGB pixels to `width` x `height` the way the original service did.
///
/// A stretch without crop, with a Catmull-Rom convolution: the filter Pillow calls BICUBIC.
/// Pillow filters rows first and rounds to 8 bits before filtering columns; `fast_image_resize`
/// would filter columns first for 8-bit images, which clips overshoots at other places, so the
/// two passes are run one at a time in Pillow's order.
pub fn resize(rgb: &RgbImage, width: u32, height: u32) -> Result<RgbImage, ImageError> {
    let (src_w, src_h) = rgb.dimensions();
    let mut resizer = Resizer::new();
    let rows_done = if src_w == width {
        rgb.clone()
    } else {
        resize_pass(&mut resizer, rgb, width, src_h)?
    };
    if src_h == height {
        return Ok(rows_done);
    }
    resize_pass(&mut resizer, &rows_done, width, height)
}

/// One convolution pass: exactly one of the two dimensions changes.
fn resize_pass(
    resizer: &mut Resizer,
    src: &RgbImage,
    width: u32,
    height: u32,
) -> Result<RgbImage, ImageError> {
    let unusable =
        |e: &dyn std::fmt::Display| ImageError::Invalid(format!("cannot resize the image: {e}"));
    let (src_w, src_h) = src.dimensions();
    let src = fast_image_resize::images::ImageRef::new(src_w, src_h, src.as_raw(), PixelType::U8x3)
        .map_err(|e| unusable(&e))?;
    let mut dst = ResizeImage::new(width, height, PixelType::U8x3);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::CatmullRom));
    resizer
        .resize(&src, &mut dst, &options)
        .map_err(|e| unusable(&e))?;
    RgbImage::from_raw(width, height, dst.into_vec()).ok_or_else(|| unusable(&"wrong buffer size"))
}

/// Scales to [0, 1], normalises with [`MEAN`] and [`STD`] and lays the pixels out as NCHW.
pub fn normalize(rgb: &RgbImage) -> Vec<f32> {
    let plane = rgb.width() as usize * rgb.height() as usize;
    let mut tensor = vec![0f32; CHANNELS * plane];
    // Per channel, (v / 255 - mean) / std is one multiply-add with these two constants.
    let scale: [f32; 3] = std::array::from_fn(|c| 1.0 / (255.0 * STD[c]));
    let offset: [f32; 3] = std::array::from_fn(|c| -MEAN[c] / STD[c]);
    let (r, rest) = tensor.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for (i, px) in rgb.as_raw().chunks_exact(CHANNELS).enumerate() {
        r[i] = f32::from(px[0]) * scale[0] + offset[0];
        g[i] = f32::from(px[1]) * scale[1] + offset[1];
        b[i] = f32::from(px[2]) * scale[2] + offset[2];
    }
    tensor
}

/// The full pipeline: decoded RGB pixels to the model's NCHW input of `width` x `height`.
pub fn to_tensor(rgb: &RgbImage, width: u32, height: u32) -> Result<Vec<f32>, ImageError> {
    Ok(normalize(&resize(rgb, width, height)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Rgb, Rgba};

    fn encode(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        image.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    fn gradient(w: u32, h: u32) -> RgbImage {
        ImageBuffer::from_fn(w, h, |x, y| {
            Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, 128])
        })
    }

    #[test]
    fn decodes_every_accepted_format() {
        let img = DynamicImage::ImageRgb8(gradient(40, 30));
        for format in ACCEPTED_FORMATS {
            let bytes = encode(&img, format);
            let rgb = decode(&bytes, 10_000).unwrap_or_else(|e| panic!("{format:?}: {e}"));
            assert_eq!(rgb.dimensions(), (40, 30), "{format:?}");
        }
    }

    #[test]
    fn lossless_decode_keeps_pixels_and_drops_alpha() {
        let rgba: ImageBuffer<Rgba<u8>, Vec<u8>> = ImageBuffer::from_fn(8, 4, |x, y| {
            Rgba([x as u8 * 30, y as u8 * 60, 7, (x * 30) as u8])
        });
        let bytes = encode(&DynamicImage::ImageRgba8(rgba), ImageFormat::Png);
        let rgb = decode(&bytes, 1000).unwrap();
        assert_eq!(rgb.get_pixel(3, 2), &Rgb([90, 120, 7]));
        assert_eq!(rgb.get_pixel(0, 0), &Rgb([0, 0, 7]));
    }

    #[test]
    fn rejects_garbage_truncated_and_unsupported_data() {
        assert!(matches!(
            decode(b"definitely not an image", 1000),
            Err(ImageError::Invalid(_))
        ));
        let png = encode(&DynamicImage::ImageRgb8(gradient(64, 64)), ImageFormat::Png);
        let truncated = &png[..png.len() / 2];
        assert!(matches!(
            decode(truncated, 100_000),
            Err(ImageError::Invalid(_))
        ));
        // A valid header with no pixel data behind it.
        assert!(matches!(
            decode(&png[..40], 100_000),
            Err(ImageError::Invalid(_))
        ));
        assert!(matches!(decode(b"", 1000), Err(ImageError::Invalid(_))));
    }

    #[test]
    fn refuses_images_over_the_pixel_limit_before_decoding() {
        let png = encode(
            &DynamicImage::ImageRgb8(gradient(100, 50)),
            ImageFormat::Png,
        );
        assert_eq!(decode(&png, 5000).unwrap().dimensions(), (100, 50));
        let err = decode(&png, 4999).unwrap_err();
        assert!(
            matches!(&err, ImageError::TooLarge(m) if m.contains("100x50")),
            "{err}"
        );
    }

    #[test]
    fn applies_exif_orientation() {
        // A JPEG whose EXIF says "rotate 90° clockwise" decodes upright: 20x10 stored, 10x20 shown.
        let stored = DynamicImage::ImageRgb8(gradient(20, 10));
        let jpeg = encode(&stored, ImageFormat::Jpeg);
        let with_exif = insert_exif_orientation(&jpeg, 6);
        assert_eq!(decode(&jpeg, 1000).unwrap().dimensions(), (20, 10));
        assert_eq!(decode(&with_exif, 1000).unwrap().dimensions(), (10, 20));
    }

    /// Inserts an APP1 EXIF segment holding only an Orientation tag after the SOI marker.
    fn insert_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
        let mut tiff = Vec::new();
        tiff.extend_from_slice(b"MM\x00\x2a\x00\x00\x00\x08"); // big-endian, IFD at 8
        tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry
        tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
        tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
        tiff.extend_from_slice(&1u32.to_be_bytes()); // count
        tiff.extend_from_slice(&orientation.to_be_bytes());
        tiff.extend_from_slice(&[0, 0]);
        tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
        let mut segment = b"Exif\x00\x00".to_vec();
        segment.extend_from_slice(&tiff);
        let mut out = jpeg[..2].to_vec();
        out.extend_from_slice(&[0xFF, 0xE1]);
        out.extend_from_slice(&((segment.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(&segment);
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    #[test]
    fn large_jpegs_decode_at_reduced_scale_with_nearly_the_same_tensor() {
        let big = DynamicImage::ImageRgb8(gradient(1900, 1000));
        let jpeg = encode(&big, ImageFormat::Jpeg);
        // 1900x1000 keeps >= 448 on both axes at 1/2 scale only.
        let scaled = decode_for_input(&jpeg, 10_000_000, 224, 224).unwrap();
        assert_eq!(scaled.dimensions(), (950, 500));
        let full = decode(&jpeg, 10_000_000).unwrap();
        let a = to_tensor(&scaled, 224, 224).unwrap();
        let b = to_tensor(&full, 224, 224).unwrap();
        let mean_diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len() as f32;
        // Less than one grey level on average (one level is about 0.017 after normalisation).
        assert!(mean_diff < 0.017, "{mean_diff}");

        // Orientation still applies on the scaled path; small JPEGs take the full path.
        let rotated = insert_exif_orientation(&jpeg, 6);
        assert_eq!(
            decode_for_input(&rotated, 10_000_000, 224, 224)
                .unwrap()
                .dimensions(),
            (500, 950)
        );
        let small = encode(
            &DynamicImage::ImageRgb8(gradient(640, 480)),
            ImageFormat::Jpeg,
        );
        assert_eq!(
            decode_for_input(&small, 10_000_000, 224, 224)
                .unwrap()
                .dimensions(),
            (640, 480)
        );
        // The pixel limit is checked before any decoding on this path too.
        assert!(matches!(
            decode_for_input(&jpeg, 1_000_000, 224, 224),
            Err(ImageError::TooLarge(_))
        ));
    }

    #[test]
    fn resize_stretches_to_the_requested_size() {
        let out = resize(&gradient(300, 100), 224, 224).unwrap();
        assert_eq!(out.dimensions(), (224, 224));
        // A flat image stays flat through a normalised filter.
        let flat = ImageBuffer::from_pixel(50, 70, Rgb([10, 200, 90]));
        let out = resize(&flat, 224, 224).unwrap();
        assert!(out.pixels().all(|p| *p == Rgb([10, 200, 90])));
    }

    #[test]
    fn normalize_uses_imagenet_statistics_in_nchw() {
        let img = ImageBuffer::from_fn(2, 1, |x, _| {
            if x == 0 {
                Rgb([0, 0, 0])
            } else {
                Rgb([255, 255, 255])
            }
        });
        let t = normalize(&img);
        assert_eq!(t.len(), 6);
        // Channel-major: R(0,0), R(1,0), G(0,0), G(1,0), B(0,0), B(1,0).
        let expect = [
            -MEAN[0] / STD[0],
            (1.0 - MEAN[0]) / STD[0],
            -MEAN[1] / STD[1],
            (1.0 - MEAN[1]) / STD[1],
            -MEAN[2] / STD[2],
            (1.0 - MEAN[2]) / STD[2],
        ];
        for (got, want) in t.iter().zip(expect) {
            assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        }
    }
}

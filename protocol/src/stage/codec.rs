//! How hidden states are packed for the wire (pure).
//!
//! Per token a llama stage hands on one row of `hidden` floats. `F32` sends
//! them as they are; `F16` halves the bytes; `Int8Row` sends each row as one
//! f32 scale (its largest magnitude / 127) and a signed byte per value, a
//! quarter of f32 plus 4 bytes a row. `Int7Outliers` is for llama hidden
//! states, where a few channels run two orders of magnitude above the rest
//! and would set a plain per-row scale: each row keeps its [`OUTLIERS`]
//! largest values exactly (f16, with their column) and packs the rest in
//! 7 bits under a scale the rest sets, about 23% of f32.

use super::frame::FrameError;

/// A hidden-state codec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Codec {
    /// 4 bytes a value.
    F32 = 0,
    /// IEEE half precision, 2 bytes a value.
    F16 = 1,
    /// A per-row scale and a signed byte a value.
    Int8Row = 2,
    /// Per row: the largest values as f16, the rest in 7 bits.
    Int7Outliers = 3,
}

/// Values per row that [`Codec::Int7Outliers`] sends exactly.
pub const OUTLIERS: usize = 4;

/// The 7-bit codes run from -63 to 63.
const LEVELS7: f32 = 63.0;

impl Codec {
    /// Every codec, from the largest encoding down.
    pub const ALL: [Codec; 4] = [Codec::F32, Codec::F16, Codec::Int8Row, Codec::Int7Outliers];

    pub(super) fn from_tag(tag: u8) -> Result<Self, FrameError> {
        Self::ALL
            .into_iter()
            .find(|c| *c as u8 == tag)
            .ok_or(FrameError::UnknownCodec(tag))
    }

    /// Bytes `rows x cols` values take.
    pub fn byte_len(self, rows: u32, cols: u32) -> usize {
        let (rows, cols) = (rows as usize, cols as usize);
        match self {
            Codec::F32 => rows * cols * 4,
            Codec::F16 => rows * cols * 2,
            Codec::Int8Row => rows * (4 + cols),
            Codec::Int7Outliers => rows * int7_row_len(cols),
        }
    }

    /// The name used on command lines and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Codec::F32 => "f32",
            Codec::F16 => "f16",
            Codec::Int8Row => "int8",
            Codec::Int7Outliers => "int7o",
        }
    }
}

impl std::str::FromStr for Codec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| format!("unknown codec {s:?} (f32, f16, int8, int7o)"))
    }
}

/// A block of hidden states, `rows x cols`, encoded.
#[derive(Clone, Debug, PartialEq)]
pub struct Hidden {
    /// How `bytes` encode the values.
    pub codec: Codec,
    /// Rows (positions).
    pub rows: u32,
    /// Columns (the hidden size).
    pub cols: u32,
    /// The encoded values, row-major.
    pub bytes: Vec<u8>,
}

impl Hidden {
    /// Encodes `values` (row-major, `rows x cols`).
    pub fn encode(values: &[f32], rows: u32, cols: u32, codec: Codec) -> Self {
        let mut bytes = Vec::with_capacity(codec.byte_len(rows, cols));
        match codec {
            Codec::F32 => values.iter().for_each(|v| bytes.extend(v.to_le_bytes())),
            Codec::F16 => values
                .iter()
                .for_each(|v| bytes.extend(half::f16::from_f32(*v).to_le_bytes())),
            Codec::Int8Row => {
                for row in values.chunks(cols.max(1) as usize) {
                    let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
                    let scale = if max > 0.0 && max.is_finite() {
                        max / 127.0
                    } else {
                        1.0
                    };
                    bytes.extend(scale.to_le_bytes());
                    bytes.extend(
                        row.iter()
                            .map(|v| (v / scale).round().clamp(-127.0, 127.0) as i8 as u8),
                    );
                }
            }
            Codec::Int7Outliers => {
                for row in values.chunks(cols.max(1) as usize) {
                    encode_int7_row(row, &mut bytes);
                }
            }
        }
        Self {
            codec,
            rows,
            cols,
            bytes,
        }
    }

    /// Checks the bytes match the shape.
    pub fn check(&self) -> Result<(), FrameError> {
        let want = self.codec.byte_len(self.rows, self.cols);
        if self.bytes.len() != want {
            return Err(FrameError::Shape {
                rows: self.rows,
                cols: self.cols,
                codec: self.codec,
                want,
                got: self.bytes.len(),
            });
        }
        Ok(())
    }

    /// The values, row-major.
    pub fn decode(&self) -> Result<Vec<f32>, FrameError> {
        self.check()?;
        let b = &self.bytes;
        Ok(match self.codec {
            Codec::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Codec::F16 => b
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Codec::Int8Row => b
                .chunks_exact(4 + self.cols as usize)
                .flat_map(|row| {
                    let scale = f32::from_le_bytes([row[0], row[1], row[2], row[3]]);
                    row[4..].iter().map(move |&q| f32::from(q as i8) * scale)
                })
                .collect(),
            Codec::Int7Outliers => {
                let cols = self.cols as usize;
                let mut out = Vec::with_capacity(self.rows as usize * cols);
                for row in b.chunks_exact(int7_row_len(cols)) {
                    decode_int7_row(row, cols, &mut out)?;
                }
                out
            }
        })
    }
}

fn int7_row_len(cols: usize) -> usize {
    2 + 4 * OUTLIERS.min(cols) + (cols * 7).div_ceil(8)
}

/// Row layout: f16 scale, then per outlier its column (u16) and value
/// (f16), then every column's 7-bit code (value / scale + 63, outliers 63),
/// packed least significant bit first.
fn encode_int7_row(row: &[f32], out: &mut Vec<u8>) {
    let k = OUTLIERS.min(row.len());
    // The k largest magnitudes among the columns a u16 can name.
    let mut top: Vec<usize> = Vec::with_capacity(k + 1);
    for (i, v) in row.iter().enumerate().take(1 << 16) {
        let at = top.partition_point(|&j| row[j].abs() >= v.abs());
        if at < k {
            top.insert(at, i);
            top.truncate(k);
        }
    }
    let rest = row
        .iter()
        .enumerate()
        .filter(|(i, v)| !top.contains(i) && v.is_finite())
        .fold(0f32, |m, (_, v)| m.max(v.abs()));
    let scale = half::f16::from_f32(rest / LEVELS7);
    let scale = if scale.to_f32() > 0.0 && scale.is_finite() {
        scale
    } else {
        half::f16::ONE
    };
    let s = scale.to_f32();
    out.extend(scale.to_le_bytes());
    for &i in &top {
        out.extend((i as u16).to_le_bytes());
        out.extend(half::f16::from_f32(row[i]).to_le_bytes());
    }
    let (mut acc, mut bits) = (0u32, 0u32);
    for (i, v) in row.iter().enumerate() {
        let q = (v / s).round().clamp(-LEVELS7, LEVELS7);
        let q = if top.contains(&i) || q.is_nan() {
            0.0
        } else {
            q
        };
        acc |= ((q as i32 + 63) as u32) << bits;
        bits += 7;
        while bits >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            bits -= 8;
        }
    }
    if bits > 0 {
        out.push(acc as u8);
    }
}

fn decode_int7_row(row: &[u8], cols: usize, out: &mut Vec<f32>) -> Result<(), FrameError> {
    let f16_at = |at: usize| half::f16::from_le_bytes([row[at], row[at + 1]]).to_f32();
    let s = f16_at(0);
    let k = OUTLIERS.min(cols);
    let codes = &row[2 + 4 * k..];
    let start = out.len();
    let (mut acc, mut bits, mut next) = (0u32, 0u32, 0usize);
    for _ in 0..cols {
        while bits < 7 {
            acc |= u32::from(codes[next]) << bits;
            next += 1;
            bits += 8;
        }
        out.push(((acc & 0x7f) as f32 - 63.0) * s);
        acc >>= 7;
        bits -= 7;
    }
    for j in 0..k {
        let at = 2 + 4 * j;
        let column = usize::from(u16::from_le_bytes([row[at], row[at + 1]]));
        if column >= cols {
            return Err(FrameError::Outlier { column, cols });
        }
        out[start + column] = f16_at(at + 2);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<f32> {
        (0..3 * 576)
            .map(|i| ((i * 7919 % 1000) as f32 / 100.0 - 5.0) * if i < 576 { 10.0 } else { 1.0 })
            .collect()
    }

    #[test]
    fn f32_is_exact_and_the_others_are_close() {
        let v = rows();
        for codec in Codec::ALL {
            let h = Hidden::encode(&v, 3, 576, codec);
            assert_eq!(h.bytes.len(), codec.byte_len(3, 576));
            let back = h.decode().unwrap();
            assert_eq!(back.len(), v.len());
            // Error relative to each row's largest magnitude.
            for (row, got) in v.chunks(576).zip(back.chunks(576)) {
                let max = row.iter().fold(0f32, |m, x| m.max(x.abs()));
                let err = row
                    .iter()
                    .zip(got)
                    .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                let bound = match codec {
                    Codec::F32 => 0.0,
                    Codec::F16 => max * 1e-3,
                    Codec::Int8Row => max / 127.0 / 2.0 + 1e-6,
                    Codec::Int7Outliers => max / 63.0 / 2.0 + max * 1e-3,
                };
                assert!(err <= bound, "{codec:?}: error {err} over {bound}");
            }
        }
    }

    #[test]
    fn int7_outliers_keep_the_largest_values_and_quantize_the_rest_finely() {
        // A llama-like row: most values within +-3, a few channels far out.
        let mut row: Vec<f32> = (0..576)
            .map(|i| ((i * 7919 % 601) as f32 / 100.0) - 3.0)
            .collect();
        for (i, v) in [(247, -95.4), (507, 53.3), (230, 23.6), (433, 20.7)] {
            row[i] = v;
        }
        let h = Hidden::encode(&row, 1, 576, Codec::Int7Outliers);
        assert_eq!(h.bytes.len(), 522);
        // At least 75% less than f32.
        assert!(Codec::Int7Outliers.byte_len(1, 576) * 4 <= Codec::F32.byte_len(1, 576));
        let back = h.decode().unwrap();
        for i in [247, 507, 230, 433] {
            assert_eq!(
                back[i],
                half::f16::from_f32(row[i]).to_f32(),
                "outlier {i} exact"
            );
        }
        // The rest err by at most half a step of the rest's own scale
        // (3 / 63), where int8 with one scale for the row errs by 95 / 127.
        let step = 3.0 / 63.0;
        for (i, (a, b)) in row.iter().zip(&back).enumerate() {
            let f16_rounding = a.abs() * 1e-3;
            assert!(
                (a - b).abs() <= step / 2.0 + f16_rounding,
                "{i}: {a} vs {b}"
            );
        }
        let int8 = Hidden::encode(&row, 1, 576, Codec::Int8Row)
            .decode()
            .unwrap();
        let err = |d: &[f32]| row.iter().zip(d).map(|(a, b)| (a - b).powi(2)).sum::<f32>();
        assert!(err(&back) * 10.0 < err(&int8));
    }

    #[test]
    fn int7_outliers_handle_odd_shapes_and_refuse_bad_columns() {
        for cols in [1u32, 3, 4, 5, 9] {
            let v: Vec<f32> = (0..2 * cols).map(|i| i as f32 - 2.5).collect();
            let h = Hidden::encode(&v, 2, cols, Codec::Int7Outliers);
            assert_eq!(h.bytes.len(), Codec::Int7Outliers.byte_len(2, cols));
            let back = h.decode().unwrap();
            for (a, b) in v.iter().zip(&back) {
                assert!((a - b).abs() <= 0.05, "{cols}: {a} vs {b}");
            }
        }
        let zeros = Hidden::encode(&[0.0; 8], 1, 8, Codec::Int7Outliers);
        assert_eq!(zeros.decode().unwrap(), vec![0.0; 8]);
        let nan = Hidden::encode(
            &[f32::NAN, 1.0, 2.0, 3.0, 4.0, 5.0],
            1,
            6,
            Codec::Int7Outliers,
        );
        assert!(nan.decode().unwrap()[5].is_finite());
        let mut bad = Hidden::encode(&[1.0; 8], 1, 8, Codec::Int7Outliers);
        bad.bytes[2] = 200; // the first outlier's column
        assert!(matches!(
            bad.decode(),
            Err(FrameError::Outlier {
                column: 200,
                cols: 8
            })
        ));
    }

    #[test]
    fn int8_rows_take_a_quarter_plus_a_scale() {
        let f32_len = Codec::F32.byte_len(1, 576);
        assert_eq!(Codec::Int8Row.byte_len(1, 576), 580);
        assert!((Codec::Int8Row.byte_len(1, 576) as f64) < 0.26 * f32_len as f64);
        assert_eq!(Codec::F16.byte_len(1, 576) * 2, f32_len);
    }

    #[test]
    fn zero_rows_and_names_round_trip() {
        let h = Hidden::encode(&[0.0; 8], 2, 4, Codec::Int8Row);
        assert_eq!(h.decode().unwrap(), vec![0.0; 8]);
        for c in Codec::ALL {
            assert_eq!(c.name().parse::<Codec>().unwrap(), c);
            assert_eq!(Codec::from_tag(c as u8).unwrap(), c);
        }
        assert!("bf16".parse::<Codec>().is_err());
        assert_eq!(Codec::from_tag(9), Err(FrameError::UnknownCodec(9)));
    }
}

//! How hidden states are packed for the wire (pure).
//!
//! Per token a llama stage hands on one row of `hidden` floats. `F32` sends
//! them as they are; `F16` halves the bytes; `Int8Row` sends each row as one
//! f32 scale (its largest magnitude / 127) and a signed byte per value, a
//! quarter of f32 plus 4 bytes a row.

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
}

impl Codec {
    /// Every codec, from the largest encoding down.
    pub const ALL: [Codec; 3] = [Codec::F32, Codec::F16, Codec::Int8Row];

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
        }
    }

    /// The name used on command lines and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Codec::F32 => "f32",
            Codec::F16 => "f16",
            Codec::Int8Row => "int8",
        }
    }
}

impl std::str::FromStr for Codec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| format!("unknown codec {s:?} (f32, f16, int8)"))
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
        })
    }
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
                };
                assert!(err <= bound, "{codec:?}: error {err} over {bound}");
            }
        }
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

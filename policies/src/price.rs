//! Exact decimal prices.
//!
//! Prices are integers of atto-units (1e-18 of the fee token) so that routing
//! estimates and billing agree to the last unit; floats never touch money.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Atto-units in one whole fee token.
pub const ATTO_PER_TOKEN: u128 = 1_000_000_000_000_000_000;
/// Prices are quoted per this many tokens.
pub const TOKENS_PER_QUOTE: u128 = 1_000_000;
/// The most fractional digits a price may have (atto precision).
pub const MAX_FRACTION_DIGITS: usize = 18;

/// Exact price in atto-units (1e-18 of the fee token) per one million tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Price(pub u128);

/// Why a price string was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid price {input:?}: {problem}")]
pub struct PriceError {
    /// The text that was parsed.
    pub input: String,
    /// What is wrong with it.
    pub problem: PriceProblem,
}

/// The specific defect in a price string.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PriceProblem {
    /// Nothing to parse.
    #[error("empty")]
    Empty,
    /// A leading minus sign: nodes cannot pay callers.
    #[error("prices cannot be negative")]
    Negative,
    /// Not of the form `digits[.digits]`.
    #[error("expected a plain decimal such as \"0.15\" or \"2\" (digits on both sides of '.', no sign, exponent or spaces)")]
    NotDecimal,
    /// More precision than an atto-unit.
    #[error("{digits} fractional digits; at most {MAX_FRACTION_DIGITS} are allowed")]
    TooManyFractionDigits {
        /// How many fractional digits the input had.
        digits: usize,
    },
    /// The value does not fit in 128 bits of atto-units.
    #[error("too large")]
    Overflow,
}

impl Price {
    /// Zero: a free node.
    pub const ZERO: Price = Price(0);

    /// Parses a non-negative decimal like "0.15", "2", "0.000001" exactly (up to 18 fractional digits); errors otherwise.
    pub fn parse(s: &str) -> Result<Price, PriceError> {
        parse_atto(s).map(Price).map_err(|problem| PriceError {
            input: s.to_owned(),
            problem,
        })
    }

    /// Fee in atto-units for `tokens` tokens at this per-1M price (exact integer arithmetic, rounds down).
    ///
    /// Saturates at `u128::MAX` instead of overflowing; only absurd prices get there.
    pub fn cost(self, tokens: u64) -> u128 {
        // Split the price so the product never needs more than 128 bits
        // unless the true result itself does.
        let whole = self.0 / TOKENS_PER_QUOTE;
        let rest = self.0 % TOKENS_PER_QUOTE;
        let tokens = u128::from(tokens);
        whole
            .saturating_mul(tokens)
            .saturating_add(rest * tokens / TOKENS_PER_QUOTE)
    }
}

fn parse_atto(s: &str) -> Result<u128, PriceProblem> {
    if s.is_empty() {
        return Err(PriceProblem::Empty);
    }
    if s.starts_with('-') {
        return Err(PriceProblem::Negative);
    }
    let (int, frac) = match s.split_once('.') {
        Some((int, frac)) => (int, frac),
        None => (s, ""),
    };
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || (s.contains('.') && !digits(frac)) {
        return Err(PriceProblem::NotDecimal);
    }
    if frac.len() > MAX_FRACTION_DIGITS {
        return Err(PriceProblem::TooManyFractionDigits { digits: frac.len() });
    }
    let whole = decimal_value(int).ok_or(PriceProblem::Overflow)?;
    // Right-pad the fraction to 18 digits: "15" -> 150000000000000000.
    let scale = 10u128.pow((MAX_FRACTION_DIGITS - frac.len()) as u32);
    let frac_atto = decimal_value(frac).ok_or(PriceProblem::Overflow)? * scale;
    whole
        .checked_mul(ATTO_PER_TOKEN)
        .and_then(|w| w.checked_add(frac_atto))
        .ok_or(PriceProblem::Overflow)
}

/// Value of an all-ASCII-digit string; None on overflow.
fn decimal_value(digits: &str) -> Option<u128> {
    digits.bytes().try_fold(0u128, |acc, b| {
        acc.checked_mul(10)?.checked_add(u128::from(b - b'0'))
    })
}

/// Formats an atto-unit amount as a decimal of whole fee tokens, e.g. `150000000000000` -> "0.00015".
pub fn format_atto(atto: u128) -> String {
    let whole = atto / ATTO_PER_TOKEN;
    let frac = atto % ATTO_PER_TOKEN;
    if frac == 0 {
        return whole.to_string();
    }
    let frac = format!("{frac:018}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

impl fmt::Display for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&format_atto(self.0))
    }
}

impl FromStr for Price {
    type Err = PriceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Price::parse(s)
    }
}

impl Serialize for Price {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // A string, because JSON numbers lose precision past 2^53.
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Price {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(PriceVisitor)
    }
}

struct PriceVisitor;

impl Visitor<'_> for PriceVisitor {
    type Value = Price;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a non-negative decimal price such as \"0.15\" or 0.15")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Price, E> {
        Price::parse(v).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Price, E> {
        self.visit_u128(u128::from(v))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Price, E> {
        v.checked_mul(ATTO_PER_TOKEN)
            .map(Price)
            .ok_or_else(|| E::custom(price_error(v.to_string(), PriceProblem::Overflow)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Price, E> {
        self.visit_i128(i128::from(v))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Price, E> {
        match u128::try_from(v) {
            Ok(v) => self.visit_u128(v),
            Err(_) => Err(E::custom(price_error(
                v.to_string(),
                PriceProblem::Negative,
            ))),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Price, E> {
        // The shortest round-trip repr is what the operator typed (0.15 stays
        // "0.15"), and Rust's Display never uses exponents, so parse that.
        Price::parse(&format!("{v}")).map_err(E::custom)
    }
}

fn price_error(input: String, problem: PriceProblem) -> PriceError {
    PriceError { input, problem }
}

/// A node's asking prices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prices {
    /// Price per one million prompt tokens.
    pub input_per_1m: Price,
    /// Price per one million completion tokens.
    pub output_per_1m: Price,
}

impl Prices {
    /// Cost of a request with these token counts.
    pub fn cost(&self, prompt_tokens: u64, completion_tokens: u64) -> u128 {
        self.input_per_1m
            .cost(prompt_tokens)
            .saturating_add(self.output_per_1m.cost(completion_tokens))
    }
}

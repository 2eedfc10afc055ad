//! Price parsing, display, arithmetic and serde.

use tollgate_policies::{format_atto, Price, PriceProblem, Prices};

use crate::common::prices;

const ATTO: u128 = 1_000_000_000_000_000_000;

fn problem(s: &str) -> PriceProblem {
    Price::parse(s).expect_err(s).problem
}

#[test]
fn parses_integers_and_decimals_exactly() {
    assert_eq!(Price::parse("0"), Ok(Price(0)));
    assert_eq!(Price::parse("2"), Ok(Price(2 * ATTO)));
    assert_eq!(Price::parse("1.5"), Ok(Price(ATTO + ATTO / 2)));
    assert_eq!(Price::parse("0.15"), Ok(Price(150_000_000_000_000_000)));
    assert_eq!(Price::parse("0.000001"), Ok(Price(1_000_000_000_000)));
    assert_eq!(Price::parse("0.000000000000000001"), Ok(Price(1)));
    assert_eq!(Price::parse("007.50"), Ok(Price(7 * ATTO + ATTO / 2)));
    assert_eq!(
        Price::parse("1.123456789012345678"),
        Ok(Price(1_123_456_789_012_345_678))
    );
}

#[test]
fn rejects_bare_dots_signs_exponents_and_spaces() {
    for s in [
        ".5", "5.", ".", "+1", " 1", "1 ", "1e3", "1.2.3", "abc", "0x10", "1,5", "inf", "NaN",
    ] {
        assert_eq!(problem(s), PriceProblem::NotDecimal, "{s:?}");
    }
}

#[test]
fn rejects_empty_and_negative() {
    assert_eq!(problem(""), PriceProblem::Empty);
    assert_eq!(problem("-1"), PriceProblem::Negative);
    assert_eq!(problem("-0.5"), PriceProblem::Negative);
    assert_eq!(problem("-0"), PriceProblem::Negative);
}

#[test]
fn rejects_nineteen_fractional_digits_even_if_zero() {
    assert_eq!(
        problem("0.0000000000000000001"),
        PriceProblem::TooManyFractionDigits { digits: 19 }
    );
    assert_eq!(
        problem("1.0000000000000000000"),
        PriceProblem::TooManyFractionDigits { digits: 19 }
    );
}

#[test]
fn accepts_exactly_u128_max_and_rejects_one_more() {
    assert_eq!(
        Price::parse("340282366920938463463.374607431768211455"),
        Ok(Price(u128::MAX))
    );
    assert_eq!(
        problem("340282366920938463463.374607431768211456"),
        PriceProblem::Overflow
    );
    assert_eq!(problem("340282366920938463464"), PriceProblem::Overflow);
    assert_eq!(problem(&"9".repeat(60)), PriceProblem::Overflow);
}

#[test]
fn error_messages_say_what_is_wrong() {
    let e = Price::parse("-2").expect_err("negative");
    assert_eq!(
        e.to_string(),
        "invalid price \"-2\": prices cannot be negative"
    );
    let e = Price::parse("0.1234567890123456789").expect_err("19 digits");
    assert!(
        e.to_string().contains("19 fractional digits; at most 18"),
        "{e}"
    );
    let e = Price::parse(".5").expect_err("bare dot");
    assert!(e.to_string().contains("plain decimal"), "{e}");
}

#[test]
fn displays_shortest_decimal() {
    assert_eq!(Price(0).to_string(), "0");
    assert_eq!(Price(2 * ATTO).to_string(), "2");
    assert_eq!(Price(150_000_000_000_000_000).to_string(), "0.15");
    assert_eq!(Price(1).to_string(), "0.000000000000000001");
    assert_eq!(Price(10 * ATTO + 5).to_string(), "10.000000000000000005");
    assert_eq!(
        Price(u128::MAX).to_string(),
        "340282366920938463463.374607431768211455"
    );
    assert_eq!(format!("[{:>6}]", Price(ATTO / 2)), "[   0.5]");
    assert_eq!(format_atto(135_000_000_000_000), "0.000135");
}

#[test]
fn from_str_matches_parse() {
    assert_eq!("0.15".parse::<Price>(), Price::parse("0.15"));
    assert!("x".parse::<Price>().is_err());
}

#[test]
fn cost_is_exact_and_rounds_down() {
    let one = Price(ATTO);
    assert_eq!(one.cost(1_000_000), ATTO);
    assert_eq!(one.cost(1), ATTO / 1_000_000);
    assert_eq!(one.cost(0), 0);
    assert_eq!(Price(999_999).cost(1), 0);
    assert_eq!(Price(1_000_001).cost(1), 1);
    assert_eq!(Price(1_999_999).cost(3), 5);
    assert_eq!(
        Price::parse("0.15").expect("price").cost(100),
        15_000_000_000_000
    );
}

#[test]
fn cost_stays_exact_near_the_top_and_saturates_past_it() {
    assert_eq!(Price(u128::MAX).cost(1), u128::MAX / 1_000_000);
    assert_eq!(Price(u128::MAX).cost(1_000_000), u128::MAX);
    assert_eq!(Price(u128::MAX).cost(u64::MAX), u128::MAX);
    // 2^100 per 1M times 2^40 tokens is about 2^120: big but representable.
    let p = Price(1 << 100);
    let tokens = 1u64 << 40;
    assert_eq!(
        p.cost(tokens),
        (1u128 << 100) / 1_000_000 * (1 << 40)
            + ((1u128 << 100) % 1_000_000) * (1 << 40) / 1_000_000
    );
}

#[test]
fn prices_cost_adds_input_and_output() {
    let p = prices("0.15", "0.6");
    // 100 * 0.15 / 1M + 200 * 0.6 / 1M = 0.000015 + 0.00012
    assert_eq!(p.cost(100, 200), 135_000_000_000_000);
    assert_eq!(p.cost(0, 0), 0);
    let max = Prices {
        input_per_1m: Price(u128::MAX),
        output_per_1m: Price(u128::MAX),
    };
    assert_eq!(max.cost(u64::MAX, u64::MAX), u128::MAX);
}

#[test]
fn deserializes_strings_integers_and_floats_exactly() {
    let p: Price = serde_yaml::from_str("\"0.15\"").expect("string");
    assert_eq!(p, Price(150_000_000_000_000_000));
    let p: Price = serde_yaml::from_str("0.15").expect("float");
    assert_eq!(p, Price(150_000_000_000_000_000));
    let p: Price = serde_yaml::from_str("0.3").expect("float");
    assert_eq!(p, Price(300_000_000_000_000_000));
    let p: Price = serde_yaml::from_str("2").expect("int");
    assert_eq!(p, Price(2 * ATTO));
    let p: Price = serde_yaml::from_str("1.0").expect("float");
    assert_eq!(p, Price(ATTO));
    let p: Price = serde_json::from_str("0.000001").expect("json float");
    assert_eq!(p, Price(1_000_000_000_000));
    let p: Price = serde_json::from_str("7").expect("json int");
    assert_eq!(p, Price(7 * ATTO));
}

#[test]
fn deserialize_rejects_negatives_and_garbage() {
    for bad in [
        "-1",
        "-0.5",
        "\"-0.5\"",
        "\".5\"",
        "true",
        "[1]",
        "0.0000000000000000001",
    ] {
        let r: Result<Price, _> = serde_yaml::from_str(bad);
        assert!(r.is_err(), "{bad} accepted as {r:?}");
    }
    let e = serde_yaml::from_str::<Price>("-3").expect_err("negative");
    assert!(e.to_string().contains("negative"), "{e}");
    assert!(serde_json::from_str::<Price>("-1").is_err());
}

#[test]
fn serializes_as_decimal_string() {
    assert_eq!(
        serde_json::to_string(&Price(150_000_000_000_000_000)).expect("json"),
        "\"0.15\""
    );
    let p = prices("0.15", "2");
    assert_eq!(
        serde_json::to_string(&p).expect("json"),
        r#"{"input_per_1m":"0.15","output_per_1m":"2"}"#
    );
    let back: Prices =
        serde_json::from_str(&serde_json::to_string(&p).expect("json")).expect("back");
    assert_eq!(back, p);
}

#[test]
fn prices_require_both_fields_and_reject_typos() {
    assert!(serde_yaml::from_str::<Prices>("input_per_1m: 1").is_err());
    let e = serde_yaml::from_str::<Prices>("input_per_1m: 1\noutput_per_1m: 2\ninput_per_1M: 3")
        .expect_err("typo");
    assert!(e.to_string().contains("input_per_1M"), "{e}");
}

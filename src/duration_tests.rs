//! Tests of `duration`.

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn parses_every_unit_and_combination() {
    let cases = [
        ("0", Duration::ZERO),
        ("0s", Duration::ZERO),
        ("0h0m", Duration::ZERO),
        ("500ms", ms(500)),
        ("90s", ms(90_000)),
        ("2m", ms(120_000)),
        ("1h", ms(3_600_000)),
        ("1h30m", ms(5_400_000)),
        ("1h2m3s4ms", ms(3_723_004)),
        ("30m1h", ms(5_400_000)),
        ("1m1m", ms(120_000)),
        ("48h", ms(172_800_000)),
        ("1.5h", ms(5_400_000)),
        ("1.5s", ms(1_500)),
        (".5s", ms(500)),
        ("1.s", ms(1_000)),
        ("1.5ms", Duration::from_micros(1_500)),
        ("0.000000001s", Duration::from_nanos(1)),
        ("1.0000000000000000009s", ms(1_000)),
    ];
    for (input, want) in cases {
        assert_eq!(parse(input), Ok(want), "{input}");
    }
}

#[test]
fn errors_name_the_input() {
    let cases = [
        ("5x", "invalid duration \"5x\": unknown unit \"x\" (use ms, s, m or h)"),
        (
            "5us",
            "invalid duration \"5us\": unknown unit \"us\" (use ms, s, m or h)",
        ),
        ("1H", "invalid duration \"1H\": unknown unit \"H\" (use ms, s, m or h)"),
        (
            "5 m",
            "invalid duration \"5 m\": unknown unit \" m\" (use ms, s, m or h)",
        ),
        ("5", "invalid duration \"5\": missing unit (use ms, s, m or h)"),
        ("1h5", "invalid duration \"1h5\": missing unit (use ms, s, m or h)"),
        ("-5s", "invalid duration \"-5s\": negative durations are not allowed"),
        (
            "",
            "invalid duration \"\": empty (write e.g. \"90s\", \"2m\" or \"1h30m\")",
        ),
        ("m", "invalid duration \"m\": expected a number at \"m\""),
        (
            "1h-5m",
            "invalid duration \"1h-5m\": unknown unit \"h-\" (use ms, s, m or h)",
        ),
        ("1h.m", "invalid duration \"1h.m\": expected a number at \".m\""),
        ("+5s", "invalid duration \"+5s\": expected a number at \"+5s\""),
        (" 2m", "invalid duration \" 2m\": expected a number at \" 2m\""),
        (".s", "invalid duration \".s\": expected a number at \".s\""),
        ("6000000h", "invalid duration \"6000000h\": too large"),
        (
            "99999999999999999999999999h",
            "invalid duration \"99999999999999999999999999h\": too large",
        ),
    ];
    for (input, want) in cases {
        let err = parse(input).expect_err(input);
        assert_eq!(err.to_string(), want);
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    }
}

#[test]
fn formats_shortest_form() {
    let cases = [
        (Duration::ZERO, "0s"),
        (ms(120_000), "2m"),
        (ms(5_400_000), "1h30m"),
        (ms(90_000), "1m30s"),
        (ms(3_600_000), "1h"),
        (ms(3_601_000), "1h1s"),
        (ms(500), "500ms"),
        (ms(1_500), "1s500ms"),
        (Duration::from_micros(1_500), "1.5ms"),
        (Duration::from_nanos(1), "0.000001ms"),
        (ms(172_800_000), "48h"),
    ];
    for (d, want) in cases {
        assert_eq!(format(d), want);
    }
}

#[test]
fn format_round_trips() {
    let samples = [
        0,
        1,
        999,
        1_000_000,
        1_500_000,
        59_999_999_999,
        3_723_004_000_001,
        u64::MAX,
    ];
    for n in samples {
        let d = Duration::from_nanos(n);
        assert_eq!(parse(&format(d)), Ok(d), "{n}ns as {}", format(d));
    }
}

#[derive(Debug, serde::Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    min_age: Option<ConfigDuration>,
    #[serde(default, with = "serde_opt", skip_serializing_if = "Option::is_none")]
    max_age: Option<Duration>,
}

#[test]
fn deserializes_in_config_structs() {
    let c: Config = toml::from_str("min_age = \"2m\"\nmax_age = \"1h30m\"").unwrap();
    assert_eq!(c.min_age, Some(ConfigDuration(ms(120_000))));
    assert_eq!(c.max_age, Some(ms(5_400_000)));

    let c: Config = toml::from_str("").unwrap();
    assert_eq!(
        c,
        Config {
            min_age: None,
            max_age: None
        }
    );

    let c: Config = serde_json::from_str(r#"{"min_age": null, "max_age": "0"}"#).unwrap();
    assert_eq!(
        c,
        Config {
            min_age: None,
            max_age: Some(Duration::ZERO)
        }
    );
}

#[test]
fn config_errors_carry_the_parse_message() {
    let err = toml::from_str::<Config>("max_age = \"5x\"").unwrap_err().to_string();
    assert!(
        err.contains("invalid duration \"5x\": unknown unit \"x\" (use ms, s, m or h)"),
        "{err}"
    );
    let err = toml::from_str::<Config>("min_age = 5").unwrap_err().to_string();
    assert!(err.contains("a duration string such as"), "{err}");
}

#[test]
fn serializes_as_the_string_form() {
    let c = Config {
        min_age: Some(ConfigDuration(ms(90_000))),
        max_age: Some(ms(5_400_000)),
    };
    let text = toml::to_string(&c).unwrap();
    assert_eq!(text, "min_age = \"1m30s\"\nmax_age = \"1h30m\"\n");
    assert_eq!(toml::from_str::<Config>(&text).unwrap(), c);
    assert_eq!(ConfigDuration(ms(1_500)).to_string(), "1s500ms");
    assert_eq!("2m".parse::<ConfigDuration>(), Ok(ConfigDuration(ms(120_000))));
}

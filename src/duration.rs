//! Human durations on the command line: `30m`, `12h`, `7d`, `2w`, `1y`.

/// Milliseconds in `text`, or an error that shows the accepted forms.
pub fn parse_duration_ms(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if text.starts_with('-') {
        return Err(format!(
            "`{text}` is negative; a duration is a positive number with a unit, e.g. 30m, 12h, 7d, 2w, 1y"
        ));
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: i64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration; use e.g. 30m, 12h, 7d, 2w, 1y"))?;
    let unit_ms: i64 = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" | "" => 86_400_000,
        "w" => 7 * 86_400_000,
        "y" => 365 * 86_400_000,
        _ => {
            return Err(format!(
                "`{text}` has an unknown unit `{unit}`; use s, m, h, d, w or y"
            ))
        }
    };
    if n == 0 {
        return Err(format!(
            "`{text}` is zero; give a positive duration, e.g. 30m, 12h, 7d, 2w, 1y"
        ));
    }
    n.checked_mul(unit_ms)
        .ok_or_else(|| format!("`{text}` is too long"))
}

#[cfg(test)]
mod tests {
    use super::parse_duration_ms;

    #[test]
    fn parses_units_and_rejects_junk() {
        assert_eq!(parse_duration_ms("7d"), Ok(7 * 86_400_000));
        assert_eq!(parse_duration_ms("30m"), Ok(1_800_000));
        assert_eq!(parse_duration_ms("2w"), Ok(14 * 86_400_000));
        assert!(parse_duration_ms("soon").is_err());
        assert_eq!(parse_duration_ms("1y"), Ok(365 * 86_400_000));
        assert!(parse_duration_ms("5x").is_err());
        assert!(parse_duration_ms("0d").unwrap_err().contains("zero"));
        assert!(parse_duration_ms("-3d").unwrap_err().contains("negative"));
    }
}

//! Argument parsing shared by the tools: whole numbers and durations, with
//! messages that name the problem (a negative number, a missing unit, a
//! value out of range) rather than clap's "unexpected argument '-5'". Every
//! numeric argument also takes `allow_negative_numbers` (durations,
//! `allow_hyphen_values`), so that `-5` reaches these parsers instead of
//! being read as a flag.

use std::time::Duration;

/// A parser for a whole number from `lo` to `hi`, as `T`.
pub fn whole<T: TryFrom<u64>>(
    lo: u64,
    hi: u64,
) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static {
    move |s: &str| {
        let t = s.trim();
        if t.starts_with('-') {
            return Err(format!(
                "{t} is negative; expected a whole number from {lo} to {hi}"
            ));
        }
        let v: u64 = t
            .parse()
            .map_err(|_| format!("{t:?} is not a whole number (expected {lo} to {hi})"))?;
        if v < lo || v > hi {
            return Err(format!("{v} is out of range (expected {lo} to {hi})"));
        }
        T::try_from(v).map_err(|_| format!("{v} is too large"))
    }
}

/// A positive duration of at most an hour, with its unit (`1ms`, `500us`).
pub fn duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.starts_with('-') {
        return Err(format!("{t} is negative; a duration is positive"));
    }
    let d = humantime::parse_duration(t)
        .map_err(|e| format!("{t:?}: {e} (a duration with its unit, like 1ms or 500us)"))?;
    if d.is_zero() || d > Duration::from_secs(3600) {
        return Err(format!(
            "{t:?} is out of range (more than 0, at most an hour)"
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_problem() {
        let p = whole::<usize>(1, 1024);
        assert_eq!(p("8"), Ok(8));
        assert!(p("-5").unwrap_err().contains("negative"));
        assert!(p("0").unwrap_err().contains("out of range"));
        assert!(p("2000").unwrap_err().contains("out of range"));
        assert!(p("x").unwrap_err().contains("not a whole number"));
        assert!(whole::<u8>(0, 1000)("300")
            .unwrap_err()
            .contains("too large"));
        assert_eq!(duration("1ms"), Ok(Duration::from_millis(1)));
        assert!(duration("-1ms").unwrap_err().contains("negative"));
        assert!(duration("5").unwrap_err().contains("unit"));
        assert!(duration("0s").unwrap_err().contains("out of range"));
    }
}

//! Resource limits, as a user states them: a capacity (how many `slot:` holders a resource
//! admits at once) and a rate (how many starts per period). Stored per resource name and
//! changeable while tasks wait; the Dispatcher's Router enforces them (`routing::gate`).

use serde::{Deserialize, Serialize};
use std::{fmt, str::FromStr, time::Duration};

/// Most slots a resource may have.
pub const MAX_SLOTS: u32 = 100_000;
/// The longest period a rate may count over.
pub const MAX_PERIOD: Duration = Duration::from_secs(24 * 3600);

/// What a resource admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    /// `slot:` holders at once (1 when not set).
    #[serde(default = "one")]
    pub slots: u32,
    /// At most this many starts per period, counted over every holder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
}

fn one() -> u32 {
    1
}

impl Default for Limit {
    fn default() -> Self {
        Limit {
            slots: 1,
            rate: None,
        }
    }
}

/// At most `starts` starts in any `per_ms` milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub starts: u32,
    pub per_ms: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LimitError {
    #[error("slots must be 1 to {MAX_SLOTS}, not {0}")]
    Slots(u32),
    #[error("a rate is STARTS/PERIOD, e.g. 10/s, 100/1m or 5/500ms: {0}")]
    RateSyntax(String),
    #[error("a rate allows 1 or more starts per period of 1 ms to 24 h")]
    RateRange,
}

impl Limit {
    /// Checks the bounds.
    pub fn checked(self) -> Result<Limit, LimitError> {
        if !(1..=MAX_SLOTS).contains(&self.slots) {
            return Err(LimitError::Slots(self.slots));
        }
        if let Some(r) = self.rate {
            let longest = MAX_PERIOD.as_millis() as u64;
            if r.starts == 0 || r.per_ms == 0 || r.per_ms > longest {
                return Err(LimitError::RateRange);
            }
        }
        Ok(self)
    }
}

impl FromStr for Rate {
    type Err = LimitError;

    /// `10/s`, `10/1s`, `100/1m`, `5/500ms`.
    fn from_str(s: &str) -> Result<Rate, LimitError> {
        let bad = || LimitError::RateSyntax(s.to_owned());
        let (starts, period) = s.split_once('/').ok_or_else(bad)?;
        let starts: u32 = starts.trim().parse().map_err(|_| bad())?;
        let period = period.trim();
        // `10/s`: one of the unit.
        let period = match period.starts_with(|c: char| c.is_ascii_digit()) {
            true => period.to_owned(),
            false => format!("1{period}"),
        };
        let per = humantime::parse_duration(&period).map_err(|_| bad())?;
        let rate = Rate {
            starts,
            per_ms: per.as_millis() as u64,
        };
        Limit {
            slots: 1,
            rate: Some(rate),
        }
        .checked()?;
        Ok(rate)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per = humantime::format_duration(Duration::from_millis(self.per_ms));
        write!(f, "{}/{per}", self.starts)
    }
}

/// Why a limited resource holds a waiting job back, in words, from the `held` field of
/// `GET /jobs/{id}`: "slots of api:x full (3 of 3), held by 01a2…, …".
pub fn held_in_words(h: &serde_json::Value) -> Option<String> {
    let resource = h["resource"].as_str()?;
    let jobs: Vec<String> = h["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            let id: String = v.as_str().unwrap_or("?").chars().take(13).collect();
            format!("{id}…")
        })
        .collect();
    Some(match h["reason"].as_str()? {
        "slots" => format!(
            "slots of {resource} full ({} of {}), held by {}",
            jobs.len(),
            h["slots"].as_u64().unwrap_or(1),
            jobs.join(", ")
        ),
        "starting" => format!(
            "{resource} admits one holder at a time: waits for {} to start",
            jobs.join(", ")
        ),
        "rate" => format!(
            "rate limited on {resource} until {}",
            h["until"].as_str().unwrap_or("?")
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rates_read_as_people_write_them() {
        let rate = |starts, per_ms| Ok(Rate { starts, per_ms });
        assert_eq!("10/s".parse(), rate(10, 1000));
        assert_eq!("10/1s".parse(), rate(10, 1000));
        assert_eq!("100/1m".parse(), rate(100, 60_000));
        assert_eq!(" 5 / 500ms ".parse(), rate(5, 500));
        for bad in ["10", "/s", "x/s", "10/", "10/fortnight", "-1/s"] {
            assert!(matches!(
                bad.parse::<Rate>(),
                Err(LimitError::RateSyntax(_))
            ));
        }
        assert_eq!("0/s".parse::<Rate>(), Err(LimitError::RateRange));
        assert_eq!("1/2days".parse::<Rate>(), Err(LimitError::RateRange));
    }

    #[test]
    fn a_held_job_says_why_in_words() {
        let h = serde_json::json!({"resource": "api", "reason": "slots", "slots": 2,
            "jobs": ["01a250d8-1526-740c-9296-14b2ad9d4177", "01a250d8-1527-740c-9296-14b2ad9d4177"]});
        assert_eq!(
            held_in_words(&h).unwrap(),
            "slots of api full (2 of 2), held by 01a250d8-1526…, 01a250d8-1527…"
        );
        let h = serde_json::json!({"resource": "api", "reason": "rate", "until": "2026-12-07T12:00:00Z"});
        assert_eq!(
            held_in_words(&h).unwrap(),
            "rate limited on api until 2026-12-07T12:00:00Z"
        );
        assert_eq!(held_in_words(&serde_json::Value::Null), None);
    }

    #[test]
    fn limits_are_bounded() {
        let slots = |slots| Limit { slots, rate: None }.checked();
        assert_eq!(slots(0), Err(LimitError::Slots(0)));
        assert!(slots(1).is_ok() && slots(MAX_SLOTS).is_ok());
        assert_eq!(slots(MAX_SLOTS + 1), Err(LimitError::Slots(MAX_SLOTS + 1)));
    }

    proptest! {
        #[test]
        fn a_rate_reads_back_what_it_prints(starts in 1u32..10_000, per_ms in 1u64..86_400_000) {
            let rate = Rate { starts, per_ms };
            prop_assert_eq!(rate.to_string().parse::<Rate>(), Ok(rate));
        }
    }
}

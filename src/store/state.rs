//! The lifecycle of a job, as one type for the database, the API and the wire: it decodes
//! straight from the `state` column (`text`), so no row carries a state as a bare string.

use serde::{Deserialize, Serialize};
use std::str::FromStr;

/// The lifecycle of a job. The order of the variants is the order states move in.
///
/// Stored in the `text` column `state` in lowercase, the same spelling as in JSON.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    sqlx::Type,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum JobState {
    /// Submitted with a due time (`run_at`) still ahead: recorded, not yet in any order.
    Scheduled,
    Submitted,
    Waiting,
    Queued,
    Running,
    Completed,
    Failed,
    Canceled,
}

impl JobState {
    pub const ALL: [JobState; 8] = [
        JobState::Scheduled,
        JobState::Submitted,
        JobState::Waiting,
        JobState::Queued,
        JobState::Running,
        JobState::Completed,
        JobState::Failed,
        JobState::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Scheduled => "scheduled",
            JobState::Submitted => "submitted",
            JobState::Waiting => "waiting",
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Canceled => "canceled",
        }
    }

    pub fn is_final(self) -> bool {
        self >= JobState::Completed
    }
}

/// A name that is no job state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown state `{0}`")]
pub struct UnknownState(pub String);

impl FromStr for JobState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, UnknownState> {
        JobState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use sqlx::{Postgres, Type};

    #[test]
    fn states_parse_and_order() {
        for s in JobState::ALL {
            assert_eq!(s.as_str().parse::<JobState>().unwrap(), s);
        }
        assert!(JobState::Queued < JobState::Running);
        assert!(JobState::Failed.is_final() && !JobState::Running.is_final());
        assert!("nope".parse::<JobState>().is_err());
    }

    /// `as_str`, `FromStr`, JSON and the database must all spell a state the same way.
    #[test]
    fn every_state_round_trips_through_its_name_and_json() {
        for s in JobState::ALL {
            let name = s.as_str();
            assert_eq!(name, name.to_lowercase());
            assert_eq!(name.parse::<JobState>(), Ok(s));
            let json = serde_json::to_value(s).unwrap();
            assert_eq!(json, Value::String(name.to_owned()));
            assert_eq!(serde_json::from_value::<JobState>(json).unwrap(), s);
        }
    }

    /// Rows decode the `state` column (`text`) as a `JobState`.
    #[test]
    fn decodes_from_a_text_column() {
        let text = <String as Type<Postgres>>::type_info();
        assert!(<JobState as Type<Postgres>>::compatible(&text));
    }
}

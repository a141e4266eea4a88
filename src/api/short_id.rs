//! Short ids, as git takes them: wherever the API (and so the CLI and the dashboard) takes a
//! job's or a worker's id, a unique prefix of it will do. People copy the eight characters
//! "why is it waiting" prints; they should not have to find the other twenty-eight.
//!
//! A job id prefix becomes a range of UUIDs (`low..=high`: the prefix padded with `0`s and
//! with `f`s), which the jobs table's primary key answers without a scan. Parsing the prefix
//! and choosing among candidates are pure; the lookups are the store's and the Supervisor's.

use super::ApiError;
use crate::store::Store;
use uuid::Uuid;

/// The fewest hex digits a job id prefix may have: shorter ones match too many jobs to be
/// useful and would walk a large part of the index.
pub const MIN_PREFIX: usize = 4;

/// A job id as a request gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobRef {
    Full(Uuid),
    /// Every id in `low..=high` starts with the given digits.
    Prefix {
        low: Uuid,
        high: Uuid,
    },
}

impl JobRef {
    /// A full UUID, or a prefix of its hex digits (hyphens where the UUID has them may be
    /// given or left out, upper or lower case).
    pub fn parse(given: &str) -> Result<JobRef, ApiError> {
        if let Ok(id) = Uuid::parse_str(given) {
            return Ok(JobRef::Full(id));
        }
        let digits: String = given
            .chars()
            .filter(|c| *c != '-')
            .map(|c| c.to_ascii_lowercase())
            .collect();
        let hex = digits.chars().all(|c| c.is_ascii_hexdigit());
        if !hex || digits.len() < MIN_PREFIX || digits.len() > 32 {
            return Err(ApiError::BadRequest(format!(
                "a job id is a UUID or a unique prefix of at least {MIN_PREFIX} hex digits: `{}`",
                given.chars().take(64).collect::<String>()
            )));
        }
        let pad = |with: char| {
            let mut s = digits.clone();
            s.extend(std::iter::repeat_n(with, 32 - digits.len()));
            Uuid::parse_str(&s).expect("32 hex digits are a UUID")
        };
        Ok(JobRef::Prefix {
            low: pad('0'),
            high: pad('f'),
        })
    }

    /// Whether `id` is (or starts with) this.
    #[cfg(test)]
    fn matches(&self, id: Uuid) -> bool {
        match *self {
            JobRef::Full(full) => full == id,
            JobRef::Prefix { low, high } => (low..=high).contains(&id),
        }
    }
}

/// The one candidate a short id names: none is 404, more than one is 409 listing them (up to
/// the few the lookup returned).
pub fn the_one<T: std::fmt::Display>(
    given: &str,
    what: &str,
    mut candidates: Vec<T>,
) -> Result<T, ApiError> {
    match candidates.len() {
        0 => Err(ApiError::NotFound(format!("no {what} {given}"))),
        1 => Ok(candidates.pop().expect("one candidate")),
        _ => Err(ApiError::Conflict(format!(
            "{given} is ambiguous: it starts the ids of {what}s {} (give more of the id)",
            candidates
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The job a request names: a full id as it is (the caller finds whether it exists), a
/// prefix through the jobs table.
pub async fn job_id(store: &Store, given: &str) -> Result<Uuid, ApiError> {
    match JobRef::parse(given)? {
        JobRef::Full(id) => Ok(id),
        JobRef::Prefix { low, high } => {
            the_one(given, "job", store.job_ids_between(low, high, 5).await?)
        }
    }
}

/// The worker ids among `ids` that `given` names: the one equal to it, else those it starts.
pub fn workers_named<'a>(given: &str, ids: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut starting = Vec::new();
    for id in ids {
        if id == given {
            return vec![id.to_owned()];
        }
        if !given.is_empty() && id.starts_with(given) {
            starting.push(id.to_owned());
        }
    }
    starting.sort();
    starting
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn full_ids_and_prefixes_parse() {
        let id = Uuid::now_v7();
        assert_eq!(JobRef::parse(&id.to_string()).unwrap(), JobRef::Full(id));
        let upper = id.to_string().to_uppercase();
        assert_eq!(JobRef::parse(&upper).unwrap(), JobRef::Full(id));
        for bad in [
            "",
            "abc",
            "xyz123",
            "0123456789abcdef0123456789abcdef0",
            "12 34",
        ] {
            let err = JobRef::parse(bad).unwrap_err();
            assert!(matches!(err, ApiError::BadRequest(_)), "{bad}: {err}");
        }
    }

    #[test]
    fn one_candidate_is_the_answer_none_is_404_more_are_409() {
        assert_eq!(the_one("ab", "job", vec![7]).unwrap(), 7);
        assert!(matches!(
            the_one::<u8>("ab", "job", vec![]),
            Err(ApiError::NotFound(_))
        ));
        let err = the_one("ab", "job", vec![1, 2]).unwrap_err();
        assert!(matches!(err, ApiError::Conflict(_)));
        assert!(err.to_string().contains("1, 2"), "{err}");
    }

    #[test]
    fn a_worker_id_equal_to_the_given_one_wins_over_longer_ones() {
        let ids = ["w-ab", "w-abc", "w-b"];
        assert_eq!(workers_named("w-ab", ids.into_iter()), vec!["w-ab"]);
        assert_eq!(workers_named("w-a", ids.into_iter()), vec!["w-ab", "w-abc"]);
        assert_eq!(workers_named("w-c", ids.into_iter()), Vec::<String>::new());
        assert_eq!(workers_named("", ids.into_iter()), Vec::<String>::new());
    }

    proptest! {
        /// A prefix's range holds exactly the ids whose hex digits start with it.
        #[test]
        fn a_prefix_range_holds_exactly_the_ids_it_starts(
            a in any::<u128>(), b in any::<u128>(), len in MIN_PREFIX..=32usize, hyphens in any::<bool>()
        ) {
            let (id, other) = (Uuid::from_u128(a), Uuid::from_u128(b));
            let text = match hyphens {
                true => id.hyphenated().to_string(),
                false => id.simple().to_string(),
            };
            // Cut after `len` hex digits, keeping the hyphens before them.
            let mut seen = 0;
            let given: String = text.chars().take_while(|c| {
                if *c != '-' { seen += 1; }
                seen <= len
            }).collect();
            let given = given.trim_end_matches('-');
            let r = JobRef::parse(given).unwrap();
            prop_assert!(r.matches(id));
            let digits = |u: Uuid| u.simple().to_string();
            prop_assert_eq!(
                r.matches(other),
                digits(other).starts_with(&digits(id)[..len])
            );
        }
    }
}

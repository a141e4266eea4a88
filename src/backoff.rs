//! The one retry policy of lanes: exponential backoff (doubling, capped at 5 s), built with
//! `backon`. Every loop that waits before trying again (a role reconnecting, a task retried in
//! place, a statement retried) takes its delays from here.

use backon::{BackoffBuilder, ExponentialBuilder};
use std::time::Duration;

/// The longest wait between two tries.
pub const MAX_DELAY: Duration = Duration::from_secs(5);

/// Doubling from `first`, at most `MAX_DELAY`, no jitter.
pub fn policy(first: Duration) -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_min_delay(first)
        .with_max_delay(MAX_DELAY)
        .with_factor(2.0)
}

/// Between reconnects of a role that lost the broker or its control plane: 200 ms, doubling,
/// forever, each delay up to twice as long at random: a fleet that lost the broker at once
/// does not come back to it at once.
pub fn reconnect() -> impl Iterator<Item = Duration> {
    policy(Duration::from_millis(200))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Between a task's attempts on one worker: 50 ms, doubling.
pub fn task_retry() -> impl Iterator<Item = Duration> {
    policy(Duration::from_millis(50))
        .without_max_times()
        .build()
}

/// Between sends of a task's final event the broker did not confirm: 100 ms, doubling, eight
/// tries (about 12 s in all, longer than a worker's broker-silence limit, after which the
/// session ends anyway).
pub fn final_event() -> impl Iterator<Item = Duration> {
    policy(Duration::from_millis(100)).with_max_times(8).build()
}

/// Between tries of a database statement that failed for a passing reason (deadlock, a broken
/// connection): ten retries, 2 ms after the first failure, doubling up to 20 ms. A deadlock
/// or a restart is usually over by then, and a batch is not held up for long when it is not.
pub fn statement() -> ExponentialBuilder {
    policy(Duration::from_millis(2))
        .with_max_delay(Duration::from_millis(20))
        .with_max_times(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap() {
        let ms: Vec<u128> = task_retry().take(9).map(|d| d.as_millis()).collect();
        assert_eq!(ms, [50, 100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        let ms: Vec<u128> = reconnect().take(6).map(|d| d.as_millis()).collect();
        for (got, base) in ms.iter().zip([200, 400, 800, 1600, 3200, 5000]) {
            assert!(
                (base..2 * base).contains(got),
                "{got} ms for a base of {base} ms"
            );
        }
    }
}

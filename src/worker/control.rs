//! The worker's control queue: what the server tells this one worker (its lane assignment,
//! drain, answers about redelivered tasks). Assignment is level-triggered: every `assign`
//! carries the complete set of lanes to own and to stand by for, and this loop starts and
//! stops lane loops to match it.

use super::{
    ask::Record,
    lane,
    session::{Session, SessionError},
};
use crate::protocol::Control;
use futures::StreamExt;
use lapin::{
    options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions},
    types::FieldTable,
    Consumer,
};
use std::{collections::HashMap, sync::Arc, time::Duration};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

/// How long a standby waits before subscribing to a lane, so the owner registers first.
const STANDBY_DELAY: Duration = Duration::from_millis(300);

/// Whether this worker owns a lane or stands by for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Owner,
    Standby,
}

/// A lane loop this worker runs.
struct LaneTask {
    role: Role,
    stop: CancellationToken,
    handle: JoinHandle<()>,
}

/// Declares this session's exclusive control queue (`<prefix>.worker.<id>.<session>`, a name
/// the management UI shows and no `reply_to` may name; a fresh one per session, since the
/// broker may not have noticed yet that the last session's connection is gone), bound under
/// the worker's id, and consumes it. Heartbeats name it: the server takes its absence for the
/// end of this session's connection.
pub async fn subscribe(session: &Session) -> Result<Consumer, SessionError> {
    let ch = session.conn.create_channel().await?;
    // Exclusive, not auto-delete: it lives exactly as long as the connection (a drained
    // session drops its control consumer while its last tasks may still run).
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    let name = &session.control_queue;
    let q = ch
        .queue_declare(name.as_str().into(), exclusive, FieldTable::default())
        .await?;
    ch.queue_bind(
        q.name().clone(),
        session.topo.control().into(),
        session.id.as_str().into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let tag = format!("lanes-worker-{}/control", session.id);
    Ok(ch
        .basic_consume(q.name().clone(), tag.into(), no_ack, FieldTable::default())
        .await?)
}

/// Follows the server's orders until the worker drains, then lets go of every lane.
pub async fn run(session: Arc<Session>, mut control: Consumer) {
    let mut lanes: HashMap<String, LaneTask> = HashMap::new();
    // Lanes told to stop that may still be letting go (finishing a task, settling acks,
    // putting what they hand back on record): a drain waits for them too.
    let mut releasing: Vec<JoinHandle<()>> = Vec::new();
    loop {
        let delivery = tokio::select! {
            _ = session.shutdown.draining() => break,
            d = control.next() => d,
        };
        let delivery = match delivery {
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                error!(error = %e, "control consumer failed");
                session.shutdown.lose_connection();
                break;
            }
            None => {
                session.shutdown.lose_connection();
                break;
            }
        };
        match serde_json::from_slice::<Control>(&delivery.data) {
            Ok(Control::Assign {
                lanes: owned,
                standby,
                restart,
            }) => {
                releasing.retain(|h| !h.is_finished());
                releasing.extend(assign(&session, &mut lanes, &owned, &standby, &restart));
            }
            Ok(Control::Drain) => session.shutdown.drain(),
            Ok(Control::Cancel { jobs }) => session.runner.cancels.request(&jobs),
            Ok(Control::Uncancel { jobs }) => {
                jobs.iter().for_each(|j| session.runner.cancels.forget(j))
            }
            Ok(record @ Control::Record { .. }) => answer(&session, record),
            Err(e) => warn!(error = %e, "ignoring malformed control message"),
        }
    }
    // Lanes finish their current task before letting go; it may still wait for an answer.
    let stopping = lanes.into_values().map(|lane| {
        lane.stop.cancel();
        lane.handle
    });
    let mut released = futures::future::join_all(stopping.chain(releasing));
    loop {
        tokio::select! {
            _ = &mut released => break,
            Some(Ok(d)) = control.next() => {
                if let Ok(record @ Control::Record { .. }) = serde_json::from_slice(&d.data) {
                    answer(&session, record);
                }
            }
        }
    }
}

/// Starts and stops lane loops to match a complete assignment; returns the loops it stopped,
/// which may still be letting go.
fn assign(
    session: &Arc<Session>,
    lanes: &mut HashMap<String, LaneTask>,
    owned: &[String],
    standby: &[String],
    restart: &[String],
) -> Vec<JoinHandle<()>> {
    let mut stopped = Vec::new();
    for name in restart {
        if let Some(lane) = lanes.remove(name) {
            warn!(lane = %name, "subscribing to a lane afresh: the broker saw no consumer");
            lane.stop.cancel();
            stopped.push(lane.handle);
        }
    }
    // A lane this worker owned and now only stands by for is subscribed again, so that it
    // queues up behind the new owner's consumer.
    let (kept, dropped): (HashMap<_, _>, HashMap<_, _>) =
        std::mem::take(lanes).into_iter().partition(|(name, lane)| {
            !lane.handle.is_finished()
                && (owned.contains(name) || (lane.role == Role::Standby && standby.contains(name)))
        });
    *lanes = kept;
    for lane in dropped.into_values() {
        lane.stop.cancel();
        stopped.push(lane.handle);
    }
    let wanted = owned.iter().map(|l| (l, Role::Owner));
    for (name, role) in wanted.chain(standby.iter().map(|l| (l, Role::Standby))) {
        if lanes.contains_key(name) {
            continue;
        }
        let stop = session.shutdown.lane_stop();
        let delay = match role {
            Role::Owner => Duration::ZERO,
            Role::Standby => STANDBY_DELAY,
        };
        let handle = tokio::spawn(lane::run(
            session.clone(),
            name.clone(),
            stop.clone(),
            delay,
        ));
        lanes.insert(name.clone(), LaneTask { role, stop, handle });
    }
    stopped
}

fn answer(session: &Session, record: Control) {
    if let Control::Record {
        job,
        state,
        attempts,
        running_on,
        unstarted,
    } = record
    {
        let record = Record {
            state,
            attempts,
            running_on,
            unstarted,
        };
        session.runner.asks.answer(job, record);
    }
}

//! Async work inside an actor, done in the order it was decided: the one way the control
//! plane's actors wait for I/O.
//!
//! An actor decides synchronously, in a handler (the Dispatcher routes a batch, wakes the
//! waiters a finish lets go), and then must do I/O for that decision (insert, publish) before
//! it decides anything else. `ctx.wait` alone does not keep that order: actix polls the
//! newest of several pending waits first, and a stream handler runs in the same poll round
//! as a mailbox handler even after that handler's wait was added. A wake (a mailbox message)
//! followed by a submit batch (the stream) in one round sent the batch's lane messages first,
//! so tasks routed after a woken one reached its lane before it.
//!
//! `InOrder::push` appends a step to the actor's own queue; one `ctx.wait` drains the queue
//! front to back, one step at a time, so steps run in the order they were pushed, and the
//! actor handles no message meanwhile. A step may push further steps (they go to the back:
//! they were decided after everything already queued). Never call `ctx.wait` directly in an
//! actor that uses this.

use actix::prelude::*;
use std::{
    collections::VecDeque,
    pin::Pin,
    task::{Context as TaskContext, Poll},
};

type Step<A> = Pin<Box<dyn ActorFuture<A, Output = ()>>>;

/// The steps an actor still has to run, in order.
pub struct InOrder<A: Actor> {
    queue: VecDeque<Step<A>>,
    draining: bool,
}

impl<A: Actor> Default for InOrder<A> {
    fn default() -> Self {
        InOrder {
            queue: VecDeque::new(),
            draining: false,
        }
    }
}

/// An actor that keeps an `InOrder` queue.
pub trait Ordered: Actor<Context = Context<Self>> {
    fn in_order(&mut self) -> &mut InOrder<Self>;
}

impl<A: Ordered> InOrder<A> {
    /// Runs `step` after every step pushed before it; the actor waits meanwhile.
    pub fn push<F>(act: &mut A, ctx: &mut Context<A>, step: F)
    where
        F: ActorFuture<A, Output = ()> + 'static,
    {
        let queue = act.in_order();
        queue.queue.push_back(Box::pin(step));
        if !queue.draining {
            queue.draining = true;
            ctx.wait(Drain { current: None });
        }
    }
}

/// The one wait that runs an actor's steps.
struct Drain<A: Actor> {
    current: Option<Step<A>>,
}

impl<A: Ordered> ActorFuture<A> for Drain<A> {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut A,
        ctx: &mut Context<A>,
        task: &mut TaskContext<'_>,
    ) -> Poll<()> {
        let this = self.get_mut();
        loop {
            let step = match this.current.as_mut() {
                Some(step) => step,
                None => match act.in_order().queue.pop_front() {
                    Some(next) => this.current.insert(next),
                    None => {
                        act.in_order().draining = false;
                        return Poll::Ready(());
                    }
                },
            };
            match step.as_mut().poll(act, ctx, task) {
                Poll::Ready(()) => this.current = None,
                Poll::Pending => return Poll::Pending,
            }
            if ctx.state().stopping() {
                return Poll::Ready(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Records the order its steps finish in.
    struct Recorder {
        steps: InOrder<Recorder>,
        done: Vec<u32>,
    }

    impl Actor for Recorder {
        type Context = Context<Self>;
    }

    impl Ordered for Recorder {
        fn in_order(&mut self) -> &mut InOrder<Self> {
            &mut self.steps
        }
    }

    #[derive(Message)]
    #[rtype(result = "()")]
    struct Step(u32, u64);

    impl Handler<Step> for Recorder {
        type Result = ();
        fn handle(&mut self, Step(n, ms): Step, ctx: &mut Context<Self>) {
            let io = tokio::time::sleep(Duration::from_millis(ms));
            InOrder::push(
                self,
                ctx,
                io.into_actor(self).map(move |_, act, _| act.done.push(n)),
            );
        }
    }

    impl StreamHandler<Step> for Recorder {
        fn handle(&mut self, msg: Step, ctx: &mut Context<Self>) {
            Handler::handle(self, msg, ctx);
        }
    }

    #[derive(Message)]
    #[rtype(result = "Vec<u32>")]
    struct Done;

    impl Handler<Done> for Recorder {
        type Result = MessageResult<Done>;
        fn handle(&mut self, _: Done, _: &mut Context<Self>) -> Self::Result {
            MessageResult(self.done.clone())
        }
    }

    /// A mailbox message and a stream item handled in one poll round, the later with the
    /// faster I/O: plain `ctx.wait` finished the stream's first.
    #[actix::test]
    async fn steps_finish_in_the_order_they_were_pushed() {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let addr = Recorder::create(|ctx| {
            ctx.add_stream(rx);
            Recorder {
                steps: InOrder::default(),
                done: Vec::new(),
            }
        });
        for round in 0..20u32 {
            addr.do_send(Step(2 * round, 5));
            tx.unbounded_send(Step(2 * round + 1, 0)).unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let done = addr.send(Done).await.unwrap();
        let mut sorted = done.clone();
        sorted.sort_unstable();
        assert_eq!(done.len(), 40);
        // The mailbox's step of a round is decided before the stream's step of that round.
        for round in 0..20u32 {
            let at = |n| done.iter().position(|d| *d == n).unwrap();
            assert!(at(2 * round) < at(2 * round + 1), "{done:?}");
        }
    }
}

//! The names of every broker object of one deployment (all under its prefix) and their
//! declarations, idempotent: quorum queues, single active consumer on `submit` and the lanes,
//! dead-lettering to `<prefix>.dead` with an explicit delivery limit.

use super::{Result, DELIVERY_LIMIT};
use crate::server::routing::Target;
use lapin::{
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable, LongString},
    Channel, ExchangeKind,
};

/// The names of every broker object of one deployment.
#[derive(Debug, Clone)]
pub struct Topology {
    pub prefix: String,
}

impl Topology {
    pub fn new(prefix: &str) -> Self {
        Topology {
            prefix: prefix.to_owned(),
        }
    }
    /// The submit exchange (routing key `submit`).
    pub fn exchange(&self) -> String {
        self.prefix.clone()
    }
    pub fn submit(&self) -> String {
        format!("{}.submit", self.prefix)
    }
    pub fn events(&self) -> String {
        format!("{}.events", self.prefix)
    }
    pub fn control(&self) -> String {
        format!("{}.control", self.prefix)
    }
    pub fn dead(&self) -> String {
        format!("{}.dead", self.prefix)
    }
    pub fn default_queue(&self) -> String {
        format!("{}.q.default", self.prefix)
    }
    pub fn lane(&self, n: u32) -> String {
        format!("{}.q.{n}", self.prefix)
    }
    /// The queue a routed task goes to.
    pub fn queue_of(&self, target: Target) -> String {
        match target {
            Target::Default => self.default_queue(),
            Target::Lane(n) => self.lane(n),
        }
    }
    /// The lane number of a lane queue name, if it is one.
    pub fn lane_index(&self, queue: &str) -> Option<u32> {
        queue
            .strip_prefix(&self.prefix)?
            .strip_prefix(".q.")?
            .parse()
            .ok()
    }

    /// Declares exchanges and the fixed queues. Safe to call any number of times.
    pub async fn declare(&self, ch: &Channel) -> Result<()> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.exchange_declare(
            self.exchange().into(),
            ExchangeKind::Direct,
            durable,
            FieldTable::default(),
        )
        .await?;
        ch.exchange_declare(
            self.control().into(),
            ExchangeKind::Direct,
            durable,
            FieldTable::default(),
        )
        .await?;
        let mut submit = quorum();
        submit.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        declare_queue(ch, &self.submit(), submit).await?;
        ch.queue_bind(
            self.submit().into(),
            self.exchange().into(),
            "submit".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        declare_queue(ch, &self.events(), quorum()).await?;
        declare_queue(ch, &self.dead(), quorum()).await?;
        declare_queue(ch, &self.default_queue(), self.task_queue_args()).await?;
        Ok(())
    }

    /// Declares lane `n`: a quorum queue with a single active consumer that dead-letters.
    pub async fn declare_lane(&self, ch: &Channel, n: u32) -> Result<()> {
        let mut args = self.task_queue_args();
        args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        declare_queue(ch, &self.lane(n), args).await
    }

    fn task_queue_args(&self) -> FieldTable {
        let mut args = quorum();
        args.insert("x-dead-letter-exchange".into(), string(""));
        args.insert("x-dead-letter-routing-key".into(), string(&self.dead()));
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(DELIVERY_LIMIT),
        );
        args
    }
}

fn quorum() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), string("quorum"));
    args
}

fn string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

async fn declare_queue(ch: &Channel, name: &str, args: FieldTable) -> Result<()> {
    let opts = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(name.into(), opts, args).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prefix() {
        let t = Topology::new("p1");
        assert_eq!(t.submit(), "p1.submit");
        assert_eq!(t.lane(3), "p1.q.3");
        assert_eq!(t.lane_index("p1.q.3"), Some(3));
        assert_eq!(t.lane_index("p1.q.default"), None);
        assert_eq!(t.lane_index("p2.q.3"), None);
    }
}

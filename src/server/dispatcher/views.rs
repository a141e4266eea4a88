//! The dashboard's questions to the Dispatcher, answered from its Router.

use super::Dispatcher;
use crate::server::routing::{LaneView, ResourceView};
use actix::prelude::*;

/// Asks for every open lane with its reservations and jobs.
#[derive(Message)]
#[rtype(result = "Vec<LaneView>")]
pub struct GetLanes;

impl Handler<GetLanes> for Dispatcher {
    type Result = MessageResult<GetLanes>;
    fn handle(&mut self, _: GetLanes, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.router.lane_views())
    }
}

/// Asks who holds a resource and who waits for it.
#[derive(Message)]
#[rtype(result = "ResourceView")]
pub struct GetResource(pub String);

impl Handler<GetResource> for Dispatcher {
    type Result = MessageResult<GetResource>;
    fn handle(&mut self, msg: GetResource, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.router.resource_view(&msg.0))
    }
}

//! Which field of a message names its user: forced to the authenticated user on the way in
//! and read with the attach data on the way back. Both are columns of the
//! request table ([`crate::command::requests`]), whose tests pin them; this module keeps their
//! msg_server paths.

pub use crate::command::requests::{reply_route, set_requester};

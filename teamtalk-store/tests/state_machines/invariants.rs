//! The invariants checked after every operation of a run.
//!
//! What the protocol promises for a message (docs/compatibility.md, "Messages while
//! db_proxy is away" and Q-33): `CID_MSG_DATA_ACK` is sent only once db_proxy has stored the
//! message, so an acknowledged message is in the conversation's history for good; a
//! delivered message is never resent, clients recover through unread counts and message
//! lists. Live delivery is therefore promised only where the msg_server that stored the
//! message can reach the receiver when the answer comes: every connection of the audience
//! logged in on that msg_server from the send to the ack; on the other msg_server when both
//! route_server links are up then (and, for a group, that msg_server's db_proxy link, which
//! it asks for the members). The world delivers everything of an operation before the next
//! one, so "at the ack" is the operation that brought the ack.

use teamtalk_core::domain::{GroupId, MsgId, Timestamp, UserId};
use teamtalk_core::store::{MessageQuery, MessageStore, SessionStore};

use crate::world::{block_on, Acked, World};

/// Every invariant, after the operation `step` (for the messages).
pub(crate) fn check(world: &World, step: &str) {
    for acked in &world.acked_now {
        delivered(world, acked, step);
        stored(world, acked, step);
    }
    connections(world, step);
    presence(world, step);
}

/// At the end of a run: every acknowledged message is still stored.
pub(crate) fn check_end(world: &World) {
    for acked in &world.acked {
        stored(world, acked, "end of run");
    }
}

fn delivered(world: &World, acked: &Acked, step: &str) {
    let sender = &world.clients[acked.sender];
    let origin = sender.server;
    let other = 1 - origin;
    let routes_up = world.servers.iter().all(|s| s.route.is_some());
    let other_db = world.servers[other].db.is_some() && !world.servers[other].db_stalled;
    for &r in &acked.sent.receivers {
        let receiver = &world.clients[r];
        if !receiver.logged_in {
            continue; // not connected throughout
        }
        let promised = receiver.server == origin || (routes_up && (!acked.sent.group || other_db));
        if promised {
            assert!(
                receiver.received.contains(&acked.sent.tag),
                "{step}: message {:?} (acked to client {}) not delivered to client {r} on server {}",
                acked.sent.tag,
                acked.sender,
                receiver.server
            );
        }
    }
}

fn stored(world: &World, acked: &Acked, step: &str) {
    let store = world.proxy.store();
    let query = MessageQuery::Ids {
        ids: vec![MsgId(acked.msg_id)],
        since: Timestamp(0),
        limit: 10,
    };
    let from = world.clients[acked.sender].user;
    let messages = if acked.sent.group {
        block_on(store.group_messages(GroupId(acked.sent.to), &query)).unwrap()
    } else {
        let relation = block_on(store.relation(from, UserId(acked.sent.to), false))
            .unwrap()
            .unwrap_or_else(|| panic!("{step}: acked message without a relation"));
        block_on(store.single_messages(relation, &query)).unwrap()
    };
    assert!(
        messages
            .iter()
            .any(|m| m.content == acked.sent.tag && m.from == from),
        "{step}: acked message {:?} (id {}) is not in the history",
        acked.sent.tag,
        acked.msg_id
    );
}

/// Each msg_server counts exactly the connections its clients saw logged in, and a kicked
/// connection is closed by the operation that kicked it.
fn connections(world: &World, step: &str) {
    for (i, c) in world.clients.iter().enumerate() {
        assert!(
            !(c.kicked && c.live),
            "{step}: client {i} was kicked and its connection left open"
        );
    }
    for (s, server) in world.servers.iter().enumerate() {
        let expected = world
            .clients
            .iter()
            .filter(|c| c.server == s && c.logged_in)
            .count();
        assert_eq!(
            server.ms.logged_in(),
            expected,
            "{step}: server {s} counts other logged-in connections than its clients see"
        );
    }
}

/// route_server's presence matches the logged-in connections of the msg_servers it is
/// linked to (a msg_server without a route link is unknown to it).
fn presence(world: &World, step: &str) {
    let presence = world.hub.presence();
    let visible =
        |c: &&crate::world::Client| c.logged_in && world.servers[c.server].route.is_some();
    let mut online = 0;
    for &user in &world.user_ids {
        let mine: Vec<_> = world
            .clients
            .iter()
            .filter(visible)
            .filter(|c| c.user == user)
            .collect();
        if !mine.is_empty() {
            online += 1;
        }
        let pc = mine.iter().any(|c| !c.client_type.is_mobile());
        assert_eq!(
            presence.has_pc(user),
            pc,
            "{step}: route_server's PC presence of {user:?} is wrong (connections: {:?})",
            mine.iter()
                .map(|c| (c.server, c.conn, c.client_type))
                .collect::<Vec<_>>()
        );
    }
    assert_eq!(
        presence.online_users(),
        online,
        "{step}: route_server counts other users online"
    );
}

//! Property tests of the server state machines together (msg_server, route_server, the
//! db_proxy business over the memory store): random interleavings of logins, logouts, kicks,
//! messages, upstream drops and timeouts over several clients and two msg_servers, checking
//! after every operation that
//! - an acknowledged message is stored, and delivered to the receivers the protocol promises
//!   it to (`invariants.rs` states the promise);
//! - no connection is served after the server closed it (kick, logout, timeout) or its
//!   socket went away, none is closed twice, and a kicked one is closed;
//! - route_server's presence matches the logged-in connections of both msg_servers, and each
//!   msg_server counts the connections its clients see logged in;
//! - nothing panics and one operation causes a bounded number of actions.
//!
//! 64 cases of up to 40 operations, from a fixed seed (`PROPTEST_RNG_SEED` picks another,
//! `PROPTEST_CASES` another count); failures shrink to a minimal sequence.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod invariants;
mod world;

use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use teamtalk_core::domain::ClientType;
use teamtalk_core::proto::login;

use world::{World, USERS};

/// One thing that happens in the deployment. Client indices pick among the live clients
/// (modulo their number); an operation on nobody does nothing.
#[derive(Clone, Debug)]
enum Op {
    /// A client connects to `server` and logs in (a second login of a user in the same device
    /// class kicks the older ones).
    Login {
        user: usize,
        client: usize,
        server: usize,
        status: i32,
    },
    /// A client logs out.
    Logout { who: usize },
    /// A client closes its socket.
    CloseSocket { who: usize },
    /// A client asks to kick its user's PC clients (only mobile clients may).
    KickPc { who: usize },
    /// A client sends a message to a user (possibly itself: refused without an ack).
    Send { who: usize, to: usize },
    /// A client sends a message to the group of u0, u1, u2 (u3 is not a member: no ack).
    SendGroup { who: usize },
    /// The db_proxy link of a server drops; `served`: db_proxy had handled what was waiting.
    DbDrop { server: usize, served: bool },
    /// The db_proxy link of a server comes back.
    DbOpen { server: usize },
    /// db_proxy stops answering a server (requests wait).
    DbStall { server: usize },
    /// db_proxy answers a server again.
    DbResume { server: usize },
    /// The route_server link of a server drops.
    RouteDrop { server: usize },
    /// The route_server link of a server comes back.
    RouteOpen { server: usize },
    /// Time passes; with `heartbeat` the live clients keep their connections alive.
    Advance { ms: u64, heartbeat: bool },
}

const CLIENT_TYPES: [ClientType; 4] = [
    ClientType::Windows,
    ClientType::Mac,
    ClientType::Ios,
    ClientType::Android,
];

fn op() -> impl Strategy<Value = Op> {
    let server = 0..2usize;
    let who = 0..16usize;
    let time = prop_oneof![
        4 => 0..3_000u64,
        1 => Just(11_000u64),
        1 => Just(16_000u64),
        1 => Just(125_000u64),
        1 => Just(310_000u64),
    ];
    prop_oneof![
        6 => (0..USERS, 0..4usize, server.clone(), 1..=3i32)
            .prop_map(|(user, client, server, status)| Op::Login { user, client, server, status }),
        2 => who.clone().prop_map(|who| Op::Logout { who }),
        1 => who.clone().prop_map(|who| Op::CloseSocket { who }),
        2 => who.clone().prop_map(|who| Op::KickPc { who }),
        6 => (who.clone(), 0..USERS).prop_map(|(who, to)| Op::Send { who, to }),
        3 => who.prop_map(|who| Op::SendGroup { who }),
        1 => (server.clone(), any::<bool>()).prop_map(|(server, served)| Op::DbDrop { server, served }),
        1 => server.clone().prop_map(|server| Op::DbOpen { server }),
        1 => server.clone().prop_map(|server| Op::DbStall { server }),
        1 => server.clone().prop_map(|server| Op::DbResume { server }),
        1 => server.clone().prop_map(|server| Op::RouteDrop { server }),
        1 => server.prop_map(|server| Op::RouteOpen { server }),
        3 => (time, any::<bool>()).prop_map(|(ms, heartbeat)| Op::Advance { ms, heartbeat }),
    ]
}

/// The live client an operation names, if any.
fn pick(world: &World, who: usize) -> Option<usize> {
    let live = world.live();
    (!live.is_empty()).then(|| live[who % live.len()])
}

fn apply(world: &mut World, op: &Op) {
    match *op {
        Op::Login {
            user,
            client,
            server,
            status,
        } => {
            world.login(user, CLIENT_TYPES[client], server, status);
        }
        Op::Logout { who } => {
            if let Some(c) = pick(world, who) {
                world.send(c, &login::ImLogoutReq {});
            }
        }
        Op::CloseSocket { who } => {
            if let Some(c) = pick(world, who) {
                world.close_socket(c);
            }
        }
        Op::KickPc { who } => {
            if let Some(c) = pick(world, who) {
                let user_id = world.clients[c].user.0;
                world.send(c, &login::ImKickPcClientReq { user_id });
            }
        }
        Op::Send { who, to } => {
            if let Some(c) = pick(world, who) {
                world.send_message(c, to, false);
            }
        }
        Op::SendGroup { who } => {
            if let Some(c) = pick(world, who) {
                world.send_message(c, 0, true);
            }
        }
        Op::DbDrop { server, served } => world.db_drop(server, served),
        Op::DbOpen { server } => world.db_open(server),
        Op::DbStall { server } => world.db_stall(server, true),
        Op::DbResume { server } => world.db_stall(server, false),
        Op::RouteDrop { server } => world.route_drop(server),
        Op::RouteOpen { server } => world.route_open(server),
        Op::Advance { ms, heartbeat } => world.advance(ms, heartbeat),
    }
}

/// Runs `ops` from a fresh world, checking the invariants after each; returns the world.
fn run(ops: &[Op]) -> World {
    let mut world = World::new();
    invariants::check(&world, "start");
    for (i, op) in ops.iter().enumerate() {
        world.begin();
        apply(&mut world, op);
        world.run();
        invariants::check(&world, &format!("step {i} {op:?}"));
    }
    invariants::check_end(&world);
    world
}

fn config() -> ProptestConfig {
    let seed = std::env::var("PROPTEST_RNG_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x7ea3_7a1c_u64);
    ProptestConfig {
        cases: 64,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_interleavings_keep_the_invariants(ops in proptest::collection::vec(op(), 1..40)) {
        run(&ops);
    }
}

/// The generated runs do exercise the machines: over the cases of the property, messages
/// are acknowledged and delivered, users are kicked and connections closed by the servers.
#[test]
fn the_runs_exercise_the_machines() {
    use std::cell::Cell;
    let total = Cell::new(world::Stats::default());
    let mut runner = proptest::test_runner::TestRunner::new(config());
    runner
        .run(&proptest::collection::vec(op(), 1..40), |ops| {
            let s = run(&ops).stats;
            let mut t = total.get();
            t.logins += s.logins;
            t.acks += s.acks;
            t.deliveries += s.deliveries;
            t.kicks += s.kicks;
            t.server_closes += s.server_closes;
            total.set(t);
            Ok(())
        })
        .unwrap();
    let t = total.get();
    eprintln!("over the cases: {t:?}");
    assert!(t.logins > 50 && t.acks > 20 && t.deliveries > 20, "{t:?}");
    assert!(t.kicks > 5 && t.server_closes > 20, "{t:?}");
}

/// A message between clients of the two msg_servers: stored, acknowledged, delivered through
/// the route_server; a message while db_proxy is away is held and goes out when it is back.
#[test]
fn across_servers_and_held_messages() {
    let mut w = World::new();
    let alice = w.login(0, ClientType::Windows, 0, 1);
    let bob = w.login(1, ClientType::Android, 1, 1);
    w.run();
    assert!(w.clients[alice].logged_in && w.clients[bob].logged_in);
    w.begin();
    w.send_message(alice, 1, false);
    w.run();
    assert_eq!(w.acked_now.len(), 1);
    assert_eq!(
        w.clients[bob].received.len(),
        1,
        "delivered on the other server"
    );
    invariants::check(&w, "first message");

    w.db_drop(0, false);
    w.begin();
    w.send_message(alice, 1, false);
    w.run();
    assert!(w.acked_now.is_empty(), "no ack while db_proxy is away");
    w.begin();
    w.db_open(0);
    w.run();
    assert_eq!(w.acked_now.len(), 1, "held, then stored and acknowledged");
    assert_eq!(w.clients[bob].received.len(), 2);
    invariants::check(&w, "held message");
}

/// A second PC login of a user on the other msg_server kicks the first; the user's mobile
/// client kicks the remaining PC; presence follows.
#[test]
fn kicks_across_servers() {
    let mut w = World::new();
    let first = w.login(0, ClientType::Windows, 0, 1);
    w.run();
    let second = w.login(0, ClientType::Mac, 1, 1);
    w.run();
    assert!(
        !w.clients[first].live,
        "the older PC connection is kicked and closed"
    );
    assert!(w.clients[second].logged_in);
    assert!(w.hub.presence().has_pc(w.user_ids[0]));
    let phone = w.login(0, ClientType::Ios, 0, 1);
    w.run();
    let user_id = w.user_ids[0].0;
    w.send(phone, &login::ImKickPcClientReq { user_id });
    w.run();
    assert!(
        !w.clients[second].live,
        "the phone kicked the PC on the other server"
    );
    assert!(!w.hub.presence().has_pc(w.user_ids[0]));
    assert_eq!(w.stats.kicks, 2);
    invariants::check(&w, "kicks");
}

/// The case the property shrank to (docs/compatibility.md Q-73): a PC client logged in with
/// online status OFFLINE (2), then its msg_server's route_server link drops and comes back.
/// The msg_server lists the connection with status 2; route_server must still count it.
#[test]
fn invisible_login_survives_a_route_reconnect() {
    let ops = [
        Op::Login {
            user: 0,
            client: 0,
            server: 0,
            status: 2,
        },
        Op::RouteDrop { server: 0 },
        Op::RouteOpen { server: 0 },
    ];
    let w = run(&ops);
    assert!(w.hub.presence().has_pc(w.user_ids[0]));
}

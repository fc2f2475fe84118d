//! Every request a client sends to its msg_server, and every request the msg_server makes of
//! db_proxy on its own, with all its rules in one row of [`TABLE`]: who sends it and whether
//! before login, the field forced to the authenticated user, where it goes (db_proxy range and
//! attach layout, route_server, file_server, answered locally …), what it is answered with and
//! how that answer finds its connection, and its failure reply with the situations that use it.
//!
//! The functions below are derived from the table and list no command again:
//! [`set_requester`], [`route`], [`set_attach`] / [`attach_handle`],
//! [`reply_route`], [`counts`] (the msg_server's request budget), [`unreachable_answer`] /
//! [`offline_answer`] (the msg_server without its upstream) and [`failure_reply`] (db_proxy
//! on a storage error). docs/architecture.md, "Where a command's rules live", explains the
//! columns; the tests at the bottom walk every client command of the command table.

use bytes::Bytes;

use super::failures;
use super::variant_command as id;
use super::AnyMessage;
use crate::attach::{AttachType, DbAttach, PduAttach};
use crate::ids::CommandId;

/// Which db_proxy connections a request prefers: a msg_server keeps links of both ranges and
/// falls back to the other range when the preferred one has no usable link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DbRange {
    /// Login and the big reads: validation, sessions, user info, history, unread counts.
    Login,
    /// Everything else.
    Other,
}

/// The attach data a request carries to its upstream, which the answer brings back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AttachLayout {
    /// 12 bytes ([`DbAttach`]): type `HANDLE`, the connection's handle, service type 0.
    Short,
    /// 16 bytes ([`PduAttach`]): the same with an empty embedded PDU, where the original used
    /// that layout.
    Long,
    /// A [`crate::ValidateAttach`]: the 12 bytes and the client's address.
    Validate,
    /// The message a push is for (its encoding), carried through the push lookups.
    Push,
}

/// Who sends a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sender {
    /// A client, on its msg_server connection.
    Client {
        /// Accepted before the connection has logged in; anything else closes it then.
        before_login: bool,
    },
    /// The msg_server itself, to db_proxy.
    MsgServer,
}

/// The field of a request forced to the authenticated user before it is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requester {
    /// This field (`user_id`, `from_user_id`) is overwritten with the connection's user.
    Field(&'static str),
    /// Nothing is forced, for the reason given.
    NotForced(&'static str),
}

/// Where a request goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Route {
    /// The msg_server answers it itself.
    Local,
    /// The login: db_proxy checks it as an `IMValidateReq` on the Login range.
    Login,
    /// To db_proxy, whose answer is routed back by the attach data: it counts against the
    /// connection's request budget.
    Db {
        /// The preferred db_proxy connections.
        range: DbRange,
        /// The attach data put into the request.
        attach: AttachLayout,
    },
    /// To db_proxy as a write nobody waits for: sent as is, without attach data.
    DbWrite {
        /// The preferred db_proxy connections.
        range: DbRange,
    },
    /// A message: held per sender and stored by db_proxy one at a time (`msg_server::hold`),
    /// not against the request budget.
    Message {
        /// The preferred db_proxy connections.
        range: DbRange,
        /// The attach data put into the message.
        attach: AttachLayout,
    },
    /// To the route master, whose answer is routed back by the attach data: it counts
    /// against the budget.
    RouteServer {
        /// The attach data put into the request.
        attach: AttachLayout,
    },
    /// Relayed to the receiver's connections, here and through the route master.
    Relay,
    /// To a file_server (through the route master first when the receiver's presence must
    /// be asked).
    FileServer,
    /// Nothing is done with it.
    Ignored,
}

/// What a request is answered with, and how the answer reaches its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Answer {
    /// The upstream answers with this command; it names the user (`user_id`) and brings the
    /// attach data back, and goes to the connection the attach names if that connection is
    /// still logged in as the user ([`reply_route`]).
    Routed(CommandId),
    /// Like [`Answer::Routed`], but sent to every connection of the user; the attach data
    /// only names the request it answers.
    EveryConnection(CommandId),
    /// The msg_server answers at once with this command, echoing the request's seq.
    Local(CommandId),
    /// The msg_server builds this command from its upstream's answer.
    Built(CommandId),
    /// The msg_server acts on this answer of db_proxy itself; no client gets it.
    Consumed(CommandId),
    /// No answer, for the reason given.
    Nothing(&'static str),
}

/// The failure reply of a request: its body is written once in `command::failures`; these
/// flags say in which situations it is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// A failure body exists.
    Reply {
        /// The msg_server answers with it (attach data cleared) when the request's upstream
        /// is unreachable: no usable db_proxy for a db_proxy route, no file_server for
        /// [`Route::FileServer`].
        when_unreachable: bool,
        /// db_proxy answers with it when storage fails.
        on_storage_error: bool,
    },
    /// No failure reply, for the reason given (the client's request then times out, or it
    /// is answered in another way).
    NoReply(&'static str),
}

/// One row of [`TABLE`]: every rule of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rules {
    /// The request's command.
    pub command: CommandId,
    /// Who sends it, and whether before login.
    pub sender: Sender,
    /// The field forced to the authenticated user.
    pub requester: Requester,
    /// Where it goes.
    pub route: Route,
    /// What it is answered with, and how the answer is routed.
    pub answer: Answer,
    /// Its failure reply and when it is sent.
    pub failure: Failure,
}

impl Route {
    /// The attach data the request carries, for routes whose answer comes back by it.
    pub const fn attach(self) -> Option<AttachLayout> {
        match self {
            Route::Db { attach, .. }
            | Route::Message { attach, .. }
            | Route::RouteServer { attach } => Some(attach),
            _ => None,
        }
    }

    /// The db_proxy range of a route to db_proxy.
    pub const fn db_range(self) -> Option<DbRange> {
        match self {
            Route::Login => Some(DbRange::Login),
            Route::Db { range, .. } | Route::DbWrite { range } | Route::Message { range, .. } => {
                Some(range)
            }
            _ => None,
        }
    }
}

impl AttachLayout {
    /// The attach data naming connection `handle`, for the layouts that carry the handle
    /// alone ([`AttachLayout::Short`], [`AttachLayout::Long`]).
    pub fn for_handle(self, handle: u32) -> Option<Bytes> {
        match self {
            AttachLayout::Short => Some(DbAttach::new(AttachType::HANDLE, handle).to_bytes()),
            AttachLayout::Long => {
                Some(PduAttach::new(AttachType::HANDLE, handle, Bytes::new()).to_bytes())
            }
            AttachLayout::Validate | AttachLayout::Push => None,
        }
    }
}

impl Rules {
    /// Whether the request counts against the msg_server's per-connection request budget:
    /// a client request whose answer comes back from db_proxy or route_server by its attach.
    pub const fn counts(&self) -> bool {
        matches!(self.sender, Sender::Client { .. })
            && matches!(self.route, Route::Db { .. } | Route::RouteServer { .. })
    }
}

// ---- the column grammar -----------------------------------------------------------------

macro_rules! sender {
    (client(before_login)) => {
        Sender::Client { before_login: true }
    };
    (client(after_login)) => {
        Sender::Client {
            before_login: false,
        }
    };
    (msg_server()) => {
        Sender::MsgServer
    };
}

macro_rules! requester {
    (field($field:ident)) => {
        Requester::Field(stringify!($field))
    };
    (not_forced($why:literal)) => {
        Requester::NotForced($why)
    };
    (@set $m:ident, $user:ident, field($field:ident)) => {{
        $m.$field = $user;
        true
    }};
    (@set $m:ident, $user:ident, not_forced($why:literal)) => {{
        let _ = ($m, $user);
        false
    }};
}

macro_rules! route {
    (local()) => {
        Route::Local
    };
    (login()) => {
        Route::Login
    };
    (db($range:ident, $attach:ident)) => {
        Route::Db {
            range: DbRange::$range,
            attach: AttachLayout::$attach,
        }
    };
    (db_write($range:ident)) => {
        Route::DbWrite {
            range: DbRange::$range,
        }
    };
    (message($range:ident, $attach:ident)) => {
        Route::Message {
            range: DbRange::$range,
            attach: AttachLayout::$attach,
        }
    };
    (route_server($attach:ident)) => {
        Route::RouteServer {
            attach: AttachLayout::$attach,
        }
    };
    (relay()) => {
        Route::Relay
    };
    (file_server()) => {
        Route::FileServer
    };
    (ignored()) => {
        Route::Ignored
    };
    // Writes the attach data of the routes that carry one.
    (@attach $m:ident, $attach:ident, db $args:tt) => {{
        $m.attach_data = Some($attach);
        true
    }};
    (@attach $m:ident, $attach:ident, message $args:tt) => {{
        $m.attach_data = Some($attach);
        true
    }};
    (@attach $m:ident, $attach:ident, route_server $args:tt) => {{
        $m.attach_data = Some($attach);
        true
    }};
    (@attach $m:ident, $attach:ident, $other:ident $args:tt) => {{
        let _ = ($m, $attach);
        false
    }};
}

macro_rules! answer {
    (routed($rsp:ident)) => {
        Answer::Routed(id::$rsp)
    };
    (every_connection($rsp:ident)) => {
        Answer::EveryConnection(id::$rsp)
    };
    (local($rsp:ident)) => {
        Answer::Local(id::$rsp)
    };
    (built($rsp:ident)) => {
        Answer::Built(id::$rsp)
    };
    (consumed($rsp:ident)) => {
        Answer::Consumed(id::$rsp)
    };
    (nothing($why:literal)) => {
        Answer::Nothing($why)
    };
}

/// Builds [`reply_route`] from the answer column: one arm per answer that names its user and
/// brings the attach data back.
macro_rules! reply_route_fn {
    (@arms [$($arms:tt)*]) => {
        /// The user a response is for and its attach data field, for the responses the
        /// msg_server routes back to the requesting connection ([`Answer::Routed`],
        /// [`Answer::EveryConnection`]). `None` for other messages.
        pub fn reply_route(message: &mut AnyMessage) -> Option<(u32, &mut Option<Bytes>)> {
            match message {
                $($arms)*
                _ => None,
            }
        }
    };
    (@arms [$($arms:tt)*] routed($rsp:ident) $($rest:tt)*) => {
        reply_route_fn!(@arms [$($arms)*
            AnyMessage::$rsp(m) => Some((m.user_id, &mut m.attach_data)),
        ] $($rest)*);
    };
    (@arms [$($arms:tt)*] every_connection($rsp:ident) $($rest:tt)*) => {
        reply_route_fn!(@arms [$($arms)*
            AnyMessage::$rsp(m) => Some((m.user_id, &mut m.attach_data)),
        ] $($rest)*);
    };
    (@arms [$($arms:tt)*] $other:ident $args:tt $($rest:tt)*) => {
        reply_route_fn!(@arms [$($arms)*] $($rest)*);
    };
}

macro_rules! failure {
    (reply($body:ident, unreachable: $unreachable:literal, storage_error: $storage:literal)) => {
        Failure::Reply {
            when_unreachable: $unreachable,
            on_storage_error: $storage,
        }
    };
    (no_reply($why:literal)) => {
        Failure::NoReply($why)
    };
    (@body $r:ident, reply($body:ident, $($flags:tt)*)) => {
        Some(failures::$body($r).into())
    };
    (@body $r:ident, no_reply($why:literal)) => {{
        let _ = $r;
        None
    }};
}

macro_rules! requests {
    ($(
        $variant:ident {
            from: $from:ident $from_args:tt,
            requester: $req:ident $req_args:tt,
            to: $to:ident $to_args:tt,
            answer: $ans:ident $ans_args:tt,
            failure: $fail:ident $fail_args:tt $(,)?
        }
    )*) => {
        /// Every request served by a msg_server or db_proxy and its rules, in command order.
        pub const TABLE: &[Rules] = &[$(
            Rules {
                command: id::$variant,
                sender: sender!($from $from_args),
                requester: requester!($req $req_args),
                route: route!($to $to_args),
                answer: answer!($ans $ans_args),
                failure: failure!($fail $fail_args),
            },
        )*];

        /// Overwrites the requester field of a request ([`Requester::Field`]) with `user`;
        /// `false` when the request has none.
        pub fn set_requester(message: &mut AnyMessage, user: u32) -> bool {
            match message {
                $(AnyMessage::$variant(m) => requester!(@set m, user, $req $req_args),)*
                _ => false,
            }
        }

        /// Puts `attach` into the attach data of a request whose route carries one
        /// ([`Route::attach`]); `false` (nothing written) for other messages.
        pub fn set_attach(message: &mut AnyMessage, attach: Bytes) -> bool {
            match message {
                $(AnyMessage::$variant(m) => route!(@attach m, attach, $to $to_args),)*
                _ => false,
            }
        }

        /// The failure body of a request that has one, whatever the situation.
        pub fn failure_answer(request: &AnyMessage) -> Option<AnyMessage> {
            match request {
                $(AnyMessage::$variant(r) => failure!(@body r, $fail $fail_args),)*
                _ => None,
            }
        }

        reply_route_fn!(@arms [] $($ans $ans_args)*);
    };
}

mod table;

pub use table::{failure_answer, reply_route, set_attach, set_requester, TABLE};

// ---- derived rules ------------------------------------------------------------------------

/// The row of `command`; `None` for commands that are not requests a msg_server or db_proxy
/// serves (responses, notifications, server links).
pub fn rules(command: CommandId) -> Option<&'static Rules> {
    TABLE
        .binary_search_by_key(&command, |r| r.command)
        .ok()
        .and_then(|i| TABLE.get(i))
}

/// Where a request goes; [`Route::Ignored`] for messages without a row.
pub fn route(message: &AnyMessage) -> Route {
    rules(message.command()).map_or(Route::Ignored, |r| r.route)
}

/// The attach layout a request carries to its upstream ([`Route::attach`]).
pub fn attach_layout(message: &AnyMessage) -> Option<AttachLayout> {
    route(message).attach()
}

/// Puts the attach data naming connection `handle` into a request, in the layout its route
/// carries (short or long); `false` when its route carries none or more than the handle.
pub fn attach_handle(message: &mut AnyMessage, handle: u32) -> bool {
    match attach_layout(message).and_then(|layout| layout.for_handle(handle)) {
        Some(attach) => set_attach(message, attach),
        None => false,
    }
}

/// Whether a request is accepted before its connection has logged in.
pub fn allowed_before_login(command: CommandId) -> bool {
    matches!(
        rules(command).map(|r| r.sender),
        Some(Sender::Client { before_login: true })
    )
}

/// Whether a client request counts against the connection's request budget
/// ([`Rules::counts`]).
pub fn counts(command: CommandId) -> bool {
    rules(command).is_some_and(Rules::counts)
}

/// The answer the msg_server gives at once when the request's upstream is unreachable
/// (`when_unreachable` of [`Failure::Reply`]), attach data cleared; `None` when it gives none.
pub fn unreachable_answer(request: &AnyMessage) -> Option<AnyMessage> {
    let rules = rules(request.command())?;
    if !matches!(
        rules.failure,
        Failure::Reply {
            when_unreachable: true,
            ..
        }
    ) {
        return None;
    }
    let mut answer = failure_answer(request)?;
    if let Some((_, attach)) = reply_route(&mut answer) {
        *attach = None;
    }
    Some(answer)
}

/// [`unreachable_answer`] for the requests routed to db_proxy: the answer when no db_proxy is
/// reachable, for the requests the original answers then (groups, offline files), with every
/// required field filled.
pub fn offline_answer(request: &AnyMessage) -> Option<AnyMessage> {
    route(request).db_range()?;
    unreachable_answer(request)
}

/// The answer db_proxy gives when it cannot serve `request` (a storage error,
/// `on_storage_error` of [`Failure::Reply`]): the failure result code of the response where it has
/// one, `msg_id` 0 for a message, the request's attach data; `None` for requests whose
/// response has no way to say "failed" (the client's request then times out).
pub fn failure_reply(request: &AnyMessage) -> Option<AnyMessage> {
    let rules = rules(request.command())?;
    match rules.failure {
        Failure::Reply {
            on_storage_error: true,
            ..
        } => failure_answer(request),
        _ => None,
    }
}

#[cfg(test)]
mod tests;

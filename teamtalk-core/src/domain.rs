//! Domain vocabulary: typed ids, timestamps and the protocol's enums as Rust enums.
//!
//! prost structs carry raw `u32`/`i32`; the domain services convert them at the edge into
//! these types, so a user id cannot be passed where a group id is expected, and an enum value
//! outside the protocol is rejected once, at decoding, with a result code.

use core::fmt;

macro_rules! id_type {
    ($($(#[$doc:meta])* $name:ident;)*) => {$(
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub u32);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0)
            }
        }

        impl From<u32> for $name {
            fn from(value: u32) -> Self {
                $name(value)
            }
        }

        impl From<$name> for u32 {
            fn from(value: $name) -> Self {
                value.0
            }
        }
    )*};
}

id_type! {
    /// A user (IMUser.id). 0 means "nobody": the http_msg_server admin path, or unset.
    UserId;
    /// A group (IMGroup.id).
    GroupId;
    /// A department (IMDepart.id).
    DepartmentId;
    /// A message id, per conversation: per user pair (relation) or per group, starting at 1.
    MsgId;
    /// A user pair (IMRelationShip.id, the `relateId` of single messages).
    RelationId;
    /// Unix time in seconds, as every TeamTalk time column and message field stores it.
    Timestamp;
}

impl Timestamp {
    /// The time `secs` seconds earlier (saturating at 0).
    pub const fn minus(self, secs: u32) -> Timestamp {
        Timestamp(self.0.saturating_sub(secs))
    }
}

/// The source of time for domain logic. Core never reads the system clock; servers pass a
/// system clock, tests a [`ManualClock`].
pub trait Clock: Send + Sync {
    /// The current unix time in seconds.
    fn now(&self) -> Timestamp;
}

/// A clock that only moves when told to: deterministic tests.
#[derive(Debug, Default)]
pub struct ManualClock(core::sync::atomic::AtomicU32);

impl ManualClock {
    /// A clock standing at `now`.
    pub fn new(now: Timestamp) -> ManualClock {
        ManualClock(core::sync::atomic::AtomicU32::new(now.0))
    }

    /// Moves the clock to `now`.
    pub fn set(&self, now: Timestamp) {
        self.0.store(now.0, core::sync::atomic::Ordering::SeqCst);
    }

    /// Moves the clock forward by `secs` seconds.
    pub fn advance(&self, secs: u32) {
        self.0.fetch_add(secs, core::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(core::sync::atomic::Ordering::SeqCst))
    }
}

impl<C: Clock + ?Sized> Clock for &C {
    fn now(&self) -> Timestamp {
        (**self).now()
    }
}

impl<C: Clock + ?Sized> Clock for std::sync::Arc<C> {
    fn now(&self) -> Timestamp {
        (**self).now()
    }
}

macro_rules! wire_enum {
    ($($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $value:literal,)* })*) => {$(
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant = $value,)*
        }

        impl $name {
            /// The value from a protobuf enum field or a table column; `None` when the
            /// protocol defines no such value.
            pub const fn from_wire(value: i32) -> Option<$name> {
                match value {
                    $($value => Some($name::$variant),)*
                    _ => None,
                }
            }

            /// The value as written to the wire and to the database.
            pub const fn to_wire(self) -> i32 {
                self as i32
            }
        }
    )*};
}

wire_enum! {
    /// One-to-one or group conversation (`SessionType`; IMRecentSession.type).
    SessionKind {
        /// A conversation between two users; the peer is a user id.
        Single = 1,
        /// A group conversation; the peer is a group id.
        Group = 2,
    }

    /// Message type (`MsgType`; the `type` column of the message tables).
    MsgType {
        /// Single-chat text (client-encrypted, Base64).
        SingleText = 1,
        /// Single-chat audio: 4-byte big-endian duration, then the audio bytes.
        SingleAudio = 2,
        /// Group text.
        GroupText = 17,
        /// Group audio.
        GroupAudio = 18,
    }

    /// Device class of a connection (`ClientType`).
    ClientType {
        /// Windows PC client.
        Windows = 1,
        /// Mac client.
        Mac = 2,
        /// iOS client.
        Ios = 17,
        /// Android client.
        Android = 18,
    }

    /// Fixed or temporary group (`GroupType`; IMGroup.type).
    GroupType {
        /// A fixed group, created by an administrator (http_msg_server).
        Normal = 1,
        /// A temporary group, the only kind clients may create.
        Temporary = 2,
    }

    /// Add or remove group members (`GroupModifyType`).
    GroupChange {
        /// Add members.
        Add = 1,
        /// Remove members.
        Remove = 2,
    }
}

impl MsgType {
    /// The conversation kind the type belongs to.
    pub const fn session_kind(self) -> SessionKind {
        match self {
            MsgType::SingleText | MsgType::SingleAudio => SessionKind::Single,
            MsgType::GroupText | MsgType::GroupAudio => SessionKind::Group,
        }
    }

    /// Whether the payload is audio (duration + bytes) rather than text.
    pub const fn is_audio(self) -> bool {
        matches!(self, MsgType::SingleAudio | MsgType::GroupAudio)
    }
}

impl ClientType {
    /// Mobile clients have bit 0x10 set; the others are "PC" for kick and presence rules.
    pub const fn is_mobile(self) -> bool {
        (self as i32) & 0x10 != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_values_match_the_protocol_enums() {
        use teamtalk_proto::base_define as bd;
        for (ours, theirs) in [
            (
                MsgType::SingleText.to_wire(),
                bd::MsgType::SingleText as i32,
            ),
            (
                MsgType::SingleAudio.to_wire(),
                bd::MsgType::SingleAudio as i32,
            ),
            (MsgType::GroupText.to_wire(), bd::MsgType::GroupText as i32),
            (
                MsgType::GroupAudio.to_wire(),
                bd::MsgType::GroupAudio as i32,
            ),
            (
                SessionKind::Single.to_wire(),
                bd::SessionType::Single as i32,
            ),
            (SessionKind::Group.to_wire(), bd::SessionType::Group as i32),
            (ClientType::Ios.to_wire(), bd::ClientType::Ios as i32),
            (
                ClientType::Android.to_wire(),
                bd::ClientType::Android as i32,
            ),
            (GroupType::Temporary.to_wire(), bd::GroupType::Tmp as i32),
            (
                GroupChange::Remove.to_wire(),
                bd::GroupModifyType::Del as i32,
            ),
        ] {
            assert_eq!(ours, theirs);
        }
        assert_eq!(MsgType::from_wire(3), None);
        assert_eq!(SessionKind::from_wire(0), None);
        assert_eq!(MsgType::from_wire(17), Some(MsgType::GroupText));
    }

    #[test]
    fn mobile_and_audio_classes() {
        assert!(ClientType::Android.is_mobile() && ClientType::Ios.is_mobile());
        assert!(!ClientType::Windows.is_mobile() && !ClientType::Mac.is_mobile());
        assert!(MsgType::GroupAudio.is_audio() && !MsgType::GroupText.is_audio());
        assert_eq!(MsgType::SingleAudio.session_kind(), SessionKind::Single);
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(Timestamp(100));
        assert_eq!(clock.now(), Timestamp(100));
        clock.advance(5);
        assert_eq!(clock.now(), Timestamp(105));
        clock.set(Timestamp(7));
        let by_ref: &dyn Clock = &&clock;
        assert_eq!(by_ref.now(), Timestamp(7));
        assert_eq!(Timestamp(3).minus(10), Timestamp(0));
    }
}

//! Service and command ids: the `service_id` and `command_id` fields of the PDU header.
//!
//! Both are newtypes over `u16` so that any value read off the wire stays representable (an
//! unknown command is answered or ignored by the server, never a decoding failure of the
//! header). Known values have named constants and print as their original TeamTalk names
//! (`SID_MSG`, `CID_MSG_DATA`) in `Debug` and `Display`, which keeps logs greppable against
//! the C++ sources and the specification.
//!
//! The command constants live in the command table of [`crate::command`] together with the
//! message each command carries.

use core::fmt;

/// The `service_id` of a PDU header (docs/protocol.md § Services).
///
/// Every command belongs to the service in its high byte ([`CommandId::service`]); servers
/// dispatch on the command alone, clients on both.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ServiceId(pub u16);

impl ServiceId {
    /// `SID_LOGIN` (1): login, logout, kick, device token, push shield.
    pub const LOGIN: ServiceId = ServiceId(0x0001);
    /// `SID_BUDDY_LIST` (2): users, departments, recent sessions, presence.
    pub const BUDDY_LIST: ServiceId = ServiceId(0x0002);
    /// `SID_MSG` (3): messages, acks, unread counters, history.
    pub const MSG: ServiceId = ServiceId(0x0003);
    /// `SID_GROUP` (4): groups and membership.
    pub const GROUP: ServiceId = ServiceId(0x0004);
    /// `SID_FILE` (5): file transfer.
    pub const FILE: ServiceId = ServiceId(0x0005);
    /// `SID_SWITCH_SERVICE` (6): peer-to-peer command relay.
    pub const SWITCH_SERVICE: ServiceId = ServiceId(0x0006);
    /// `SID_OTHER` (7): heartbeat and server-to-server commands.
    pub const OTHER: ServiceId = ServiceId(0x0007);
    /// `SID_INTERNAL` (8): defined, no command uses it.
    pub const INTERNAL: ServiceId = ServiceId(0x0008);

    /// Every service id the original protocol defines.
    pub const ALL: [ServiceId; 8] = [
        Self::LOGIN,
        Self::BUDDY_LIST,
        Self::MSG,
        Self::GROUP,
        Self::FILE,
        Self::SWITCH_SERVICE,
        Self::OTHER,
        Self::INTERNAL,
    ];

    /// The original name (`SID_MSG`), or `None` for a value the protocol does not define.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0x0001 => "SID_LOGIN",
            0x0002 => "SID_BUDDY_LIST",
            0x0003 => "SID_MSG",
            0x0004 => "SID_GROUP",
            0x0005 => "SID_FILE",
            0x0006 => "SID_SWITCH_SERVICE",
            0x0007 => "SID_OTHER",
            0x0008 => "SID_INTERNAL",
            _ => return None,
        })
    }
}

/// The `command_id` of a PDU header (docs/protocol.md § Commands): what the body is and what to do
/// with it. The named constants (`CommandId::MSG_DATA` …) are defined with the command table in
/// [`crate::command`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct CommandId(pub u16);

impl CommandId {
    /// The service this command belongs to: its high byte (`0x0301` → `SID_MSG`).
    pub const fn service(self) -> ServiceId {
        ServiceId(self.0 >> 8)
    }
}

impl From<u16> for ServiceId {
    fn from(value: u16) -> Self {
        ServiceId(value)
    }
}

impl From<ServiceId> for u16 {
    fn from(value: ServiceId) -> Self {
        value.0
    }
}

impl From<u16> for CommandId {
    fn from(value: u16) -> Self {
        CommandId(value)
    }
}

impl From<CommandId> for u16 {
    fn from(value: CommandId) -> Self {
        value.0
    }
}

/// Prints the original name, or `what(0x…)` for an unknown value.
fn write_id(f: &mut fmt::Formatter<'_>, name: Option<&str>, what: &str, value: u16) -> fmt::Result {
    match name {
        Some(name) => f.write_str(name),
        None => write!(f, "{what}(0x{value:04x})"),
    }
}

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_id(f, self.name(), "SID_UNKNOWN", self.0)
    }
}

impl fmt::Debug for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_id(f, self.name(), "CID_UNKNOWN", self.0)
    }
}

impl fmt::Debug for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use teamtalk_proto::base_define as bd;

    #[test]
    fn names_print_like_the_original() {
        assert_eq!(CommandId::MSG_DATA.to_string(), "CID_MSG_DATA");
        assert_eq!(
            format!("{:?}", CommandId::OTHER_HEARTBEAT),
            "CID_OTHER_HEARTBEAT"
        );
        assert_eq!(ServiceId::MSG.to_string(), "SID_MSG");
        assert_eq!(CommandId::from(0x070c).to_string(), "CID_UNKNOWN(0x070c)");
        assert_eq!(format!("{:?}", ServiceId(0x99)), "SID_UNKNOWN(0x0099)");
    }

    #[test]
    fn unknown_values_round_trip() {
        for raw in [0u16, 0x070c, 0x0713, 0xffff] {
            assert_eq!(u16::from(CommandId::from(raw)), raw);
            assert_eq!(CommandId::from(raw).name(), None);
        }
    }

    #[test]
    fn every_command_belongs_to_its_high_byte_service() {
        for &command in CommandId::ALL {
            let service = command.service();
            assert!(ServiceId::ALL.contains(&service), "{command} → {service}");
        }
        assert_eq!(
            CommandId::SWITCH_P2P_CMD.service(),
            ServiceId::SWITCH_SERVICE
        );
        assert_eq!(
            CommandId::OTHER_FILE_SERVER_IP_RSP.service(),
            ServiceId::OTHER
        );
    }

    /// The command table agrees with the enums of IM.BaseDefine.proto, name for name.
    #[test]
    fn table_matches_the_proto_enums() {
        let mut from_proto: Vec<(u16, String)> = Vec::new();
        for value in 0..=0x0800_i32 {
            let names = [
                bd::LoginCmdId::try_from(value)
                    .ok()
                    .map(|c| c.as_str_name()),
                bd::BuddyListCmdId::try_from(value)
                    .ok()
                    .map(|c| c.as_str_name()),
                bd::MessageCmdId::try_from(value)
                    .ok()
                    .map(|c| c.as_str_name()),
                bd::GroupCmdId::try_from(value)
                    .ok()
                    .map(|c| c.as_str_name()),
                bd::FileCmdId::try_from(value).ok().map(|c| c.as_str_name()),
                bd::SwitchServiceCmdId::try_from(value)
                    .ok()
                    .map(|c| c.as_str_name()),
                bd::OtherCmdId::try_from(value)
                    .ok()
                    .map(|c| c.as_str_name()),
            ];
            for name in names.into_iter().flatten() {
                from_proto.push((value as u16, name.to_owned()));
            }
        }
        let ours: Vec<(u16, String)> = CommandId::ALL
            .iter()
            .map(|c| (c.0, c.to_string()))
            .collect();
        assert_eq!(ours, from_proto);

        for service in ServiceId::ALL {
            let proto = bd::ServiceId::try_from(i32::from(service.0)).map(|s| s.as_str_name());
            assert_eq!(proto.ok(), service.name());
        }
    }
}

//! Multi-device rules (docs/protocol.md § Multi-device rules): which connections a login or a
//! mobile's "kick my PC" request pushes out, and the push type for mobile users.
//!
//! One PC-class and one mobile-class connection per user may coexist. The original kicked only the
//! first matching connection per msg_server and left it open and working (docs/compatibility.md
//! Q-03); these rules name every connection to kick, and the server closes them after sending
//! `CID_LOGIN_KICK_USER`.

use crate::domain::ClientType;

/// `KICK_REASON_DUPLICATE_USER`: the same account logged in again on the same device class.
pub const KICK_REASON_DUPLICATE_USER: i32 = 1;
/// `KICK_REASON_MOBILE_KICK`: the user's mobile client asked to kick the PC client.
pub const KICK_REASON_MOBILE_KICK: i32 = 2;

/// Push type of a notification to a mobile user: 2 (silent) while a PC client of the user is
/// online, otherwise 1 (normal, with sound).
pub const fn push_type(pc_online: bool) -> u32 {
    if pc_online {
        2
    } else {
        1
    }
}

/// Whether two client types are of the same device class (Windows/Mac, or iOS/Android).
pub const fn same_class(a: ClientType, b: ClientType) -> bool {
    a.is_mobile() == b.is_mobile()
}

/// The connections (handle, client type) a new login of `client` kicks with
/// [`KICK_REASON_DUPLICATE_USER`]: every older connection of the user of the same class.
pub fn kicked_by_login<H: Copy>(
    client: ClientType,
    connections: impl IntoIterator<Item = (H, ClientType)>,
) -> Vec<H> {
    connections
        .into_iter()
        .filter(|(_, t)| same_class(*t, client))
        .map(|(h, _)| h)
        .collect()
}

/// The connections a `CID_LOGIN_REQ_KICKPCCLIENT` from a `requester` connection kicks with
/// [`KICK_REASON_MOBILE_KICK`]: every PC connection of the user; nothing when the request does
/// not come from a mobile client (the original ignores it then).
pub fn kicked_by_mobile<H: Copy>(
    requester: ClientType,
    connections: impl IntoIterator<Item = (H, ClientType)>,
) -> Vec<H> {
    if !requester.is_mobile() {
        return Vec::new();
    }
    connections
        .into_iter()
        .filter(|(_, t)| !t.is_mobile())
        .map(|(h, _)| h)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ClientType::*;

    #[test]
    fn classes() {
        assert!(same_class(Windows, Mac) && same_class(Ios, Android));
        assert!(!same_class(Windows, Android) && !same_class(Ios, Mac));
    }

    #[test]
    fn a_login_kicks_every_connection_of_its_class() {
        let existing = [(1, Windows), (2, Android), (3, Mac)];
        assert_eq!(
            kicked_by_login(Mac, existing),
            vec![1, 3],
            "Mac kicks Windows and the old Mac"
        );
        assert_eq!(kicked_by_login(Ios, existing), vec![2], "iOS kicks Android");
        assert!(
            kicked_by_login(Ios, [(1, Windows)]).is_empty(),
            "PC and phone coexist"
        );
    }

    #[test]
    fn only_a_mobile_may_kick_the_pc() {
        let existing = [(1, Windows), (2, Android), (3, Mac)];
        assert_eq!(kicked_by_mobile(Android, existing), vec![1, 3]);
        assert!(kicked_by_mobile(Windows, existing).is_empty());
        assert_eq!((push_type(true), push_type(false)), (2, 1));
    }
}

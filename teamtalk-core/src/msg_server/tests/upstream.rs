//! Upstream links: what route_servers get when they connect.

use super::*;

#[test]
fn route_links_get_the_online_users_and_a_master() {
    let mut h = Harness::new();
    h.login(1, ClientType::Windows);
    let mut out = Vec::new();
    let new = h.link_opened(Upstream::Route, &mut out);
    let info: server::ImOnlineUserInfo = upstream(&out, new, CommandId::OTHER_ONLINE_USER_INFO)[0]
        .decode_body()
        .unwrap();
    assert_eq!(info.user_stat_list.len(), 1);
    assert!(
        upstream(&out, new, CommandId::OTHER_ROLE_SET).is_empty(),
        "RS is still the master"
    );
    out.clear();
    out.extend(h.link_closed(RS));
    assert_eq!(
        upstream(&out, new, CommandId::OTHER_ROLE_SET).len(),
        1,
        "re-elected"
    );
}

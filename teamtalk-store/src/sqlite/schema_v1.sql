-- teamtalk-rs embedded store, schema version 1.
-- Times are unix seconds; ids are SQLite rowids (AUTOINCREMENT: never reused).

CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT    NOT NULL,
    nick          TEXT    NOT NULL DEFAULT '',
    gender        INTEGER NOT NULL DEFAULT 0,
    avatar        TEXT    NOT NULL DEFAULT '',
    department    INTEGER NOT NULL DEFAULT 0,
    email         TEXT    NOT NULL DEFAULT '',
    phone         TEXT    NOT NULL DEFAULT '',
    domain        TEXT    NOT NULL DEFAULT '',
    status        INTEGER NOT NULL DEFAULT 0,
    sign_info     TEXT    NOT NULL DEFAULT '',
    push_shield   INTEGER NOT NULL DEFAULT 0,
    password_hash TEXT    NOT NULL DEFAULT '',
    salt          TEXT    NOT NULL DEFAULT '',
    created       INTEGER NOT NULL,
    updated       INTEGER NOT NULL
);
CREATE INDEX users_name ON users (name, status);
CREATE INDEX users_updated ON users (updated);

CREATE TABLE departments (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    name     TEXT    NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    parent   INTEGER NOT NULL DEFAULT 0,
    status   INTEGER NOT NULL DEFAULT 0,
    created  INTEGER NOT NULL,
    updated  INTEGER NOT NULL
);
CREATE INDEX departments_updated ON departments (updated);

-- One row per unordered user pair; last_msg_id allocates the pair's message ids.
CREATE TABLE relations (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    small_id    INTEGER NOT NULL,
    big_id      INTEGER NOT NULL,
    last_msg_id INTEGER NOT NULL DEFAULT 0,
    created     INTEGER NOT NULL,
    UNIQUE (small_id, big_id)
);

-- kind: 1 single (peer = user), 2 group (peer = group).
CREATE TABLE sessions (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    owner   INTEGER NOT NULL,
    kind    INTEGER NOT NULL,
    peer    INTEGER NOT NULL,
    visible INTEGER NOT NULL DEFAULT 1,
    created INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    UNIQUE (owner, kind, peer)
);
CREATE INDEX sessions_recent ON sessions (owner, visible, updated);

CREATE TABLE messages (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    relation INTEGER NOT NULL,
    msg_id   INTEGER NOT NULL,
    from_id  INTEGER NOT NULL,
    to_id    INTEGER NOT NULL,
    type     INTEGER NOT NULL,
    content  BLOB    NOT NULL,
    created  INTEGER NOT NULL,
    UNIQUE (relation, msg_id)
);
CREATE INDEX messages_page ON messages (relation, created, id);

-- last_msg_id allocates the group's message ids; msg_count drives unread counters.
CREATE TABLE groups (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL,
    avatar      TEXT    NOT NULL DEFAULT '',
    creator     INTEGER NOT NULL DEFAULT 0,
    type        INTEGER NOT NULL,
    version     INTEGER NOT NULL DEFAULT 1,
    user_cnt    INTEGER NOT NULL DEFAULT 0,
    last_msg_id INTEGER NOT NULL DEFAULT 0,
    msg_count   INTEGER NOT NULL DEFAULT 0,
    last_chated INTEGER NOT NULL DEFAULT 0,
    created     INTEGER NOT NULL,
    updated     INTEGER NOT NULL
);
CREATE INDEX groups_last_chated ON groups (last_chated);

CREATE TABLE group_messages (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    group_id INTEGER NOT NULL,
    msg_id   INTEGER NOT NULL,
    from_id  INTEGER NOT NULL,
    type     INTEGER NOT NULL,
    content  BLOB    NOT NULL,
    created  INTEGER NOT NULL,
    UNIQUE (group_id, msg_id)
);
CREATE INDEX group_messages_page ON group_messages (group_id, created, id);

-- Current members only; caught_up = the group's msg_count when the member last caught up.
CREATE TABLE group_members (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    group_id  INTEGER NOT NULL,
    user_id   INTEGER NOT NULL,
    joined    INTEGER NOT NULL,
    updated   INTEGER NOT NULL,
    caught_up INTEGER NOT NULL DEFAULT 0,
    UNIQUE (group_id, user_id)
);
CREATE INDEX group_members_user ON group_members (user_id, updated);

-- Push shields survive leaving and re-joining a group, like the original's group_set hash.
CREATE TABLE group_shields (
    group_id INTEGER NOT NULL,
    user_id  INTEGER NOT NULL,
    shielded INTEGER NOT NULL,
    PRIMARY KEY (group_id, user_id)
) WITHOUT ROWID;

CREATE TABLE unread (
    owner INTEGER NOT NULL,
    peer  INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (owner, peer)
) WITHOUT ROWID;

-- client_type NULL: a token of a client type that is not pushed to.
CREATE TABLE device_tokens (
    user_id     INTEGER PRIMARY KEY,
    client_type INTEGER,
    token       TEXT    NOT NULL UNIQUE
);

CREATE TABLE offline_files (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    from_id   INTEGER NOT NULL,
    to_id     INTEGER NOT NULL,
    task_id   TEXT    NOT NULL,
    file_name TEXT    NOT NULL,
    size      INTEGER NOT NULL,
    created   INTEGER NOT NULL
);
CREATE INDEX offline_files_to ON offline_files (to_id, created);

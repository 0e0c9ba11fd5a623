//! Every statement the SQL core runs, written once with `$n` placeholders (which both sqlx's
//! SQLite and PostgreSQL drivers read), and completed by the few [`Fragments`] in which the two
//! dialects differ.

/// The SQL a backend writes its own way.
#[derive(Debug)]
pub(crate) struct Fragments {
    /// Appended to a `SELECT` that reads a row the transaction is about to change (`FOR
    /// UPDATE`), or nothing where the transaction holds the database's write lock already.
    pub(crate) lock_row: &'static str,
    /// `u.user_name` equal to `$1`, ignoring ASCII case, through the unique index.
    pub(crate) user_name_is: &'static str,
    /// `u.email` equal to `$1` ignoring case, and verified, through the partial index.
    pub(crate) verified_email_is: &'static str,
    /// The member ids of group `g`, as a JSON array, ordered.
    pub(crate) group_members: &'static str,
    /// `SELECT group_id, user_id, created_at` rows for group `$1`, members `$2` (a JSON array of
    /// ids) and time `$3`.
    pub(crate) members_from_json: &'static str,
}

/// The statements, built once per backend from its [`Fragments`].
#[derive(Debug)]
pub(crate) struct Queries {
    pub(crate) select_user: String,
    pub(crate) select_user_for_update: String,
    pub(crate) select_organization_for_update: String,
    pub(crate) find_by_external_id: String,
    pub(crate) find_by_legacy_id: String,
    pub(crate) find_by_verified_email: String,
    pub(crate) find_by_user_name: String,
    pub(crate) list_users: String,
    pub(crate) select_group: String,
    pub(crate) select_group_for_update: String,
    pub(crate) list_groups: String,
    pub(crate) groups_of: String,
    pub(crate) insert_members: String,
}

/// The columns of a user, read by [`super::rows::user`].
const USER_COLUMNS: &str = "u.id, u.email, u.email_verified, u.user_name, u.display_name, \
    u.given_name, u.family_name, u.picture, u.locale, u.roles, u.groups, u.attributes, \
    u.status, u.external_id, u.scim_attributes, u.scim_managed, u.version, u.created_at, \
    u.updated_at, u.last_login_at, u.organization_id";

impl Queries {
    pub(crate) fn new(f: &Fragments) -> Self {
        let users = |rest: &str| format!("SELECT {USER_COLUMNS} FROM jit_users u {rest}");
        let groups = |rest: &str| {
            format!(
                "SELECT g.id, g.display_name, g.external_id, g.scim_attributes, g.version, \
                 g.organization_id, \
                 g.created_at, g.updated_at, {} AS members FROM jit_groups g {rest}",
                f.group_members
            )
        };
        Self {
            select_user: users("WHERE u.id = $1"),
            select_user_for_update: users(&format!("WHERE u.id = $1{}", f.lock_row)),
            select_organization_for_update: format!(
                "SELECT document FROM jit_organizations WHERE id = $1{}",
                f.lock_row
            ),
            find_by_external_id: users("WHERE u.external_id = $1"),
            find_by_legacy_id: users(
                "WHERE u.id = (SELECT user_id FROM jit_legacy_adoptions WHERE legacy_id = $1)",
            ),
            find_by_verified_email: users(&format!(
                "WHERE {} ORDER BY u.id LIMIT $2",
                f.verified_email_is
            )),
            find_by_user_name: users(&format!("WHERE {}", f.user_name_is)),
            // Ids are UUID v7, all above the nil UUID, which stands for "from the start".
            list_users: users("WHERE u.id > $1 ORDER BY u.id LIMIT $2"),
            select_group: groups("WHERE g.id = $1"),
            select_group_for_update: groups(&format!("WHERE g.id = $1{}", f.lock_row)),
            list_groups: groups("WHERE g.id > $1 ORDER BY g.id LIMIT $2"),
            groups_of: groups(
                "WHERE g.id IN (SELECT group_id FROM jit_group_members WHERE user_id = $1) \
                 ORDER BY g.id",
            ),
            insert_members: format!(
                "INSERT INTO jit_group_members (group_id, user_id, created_at) {}",
                f.members_from_json
            ),
        }
    }
}

/// A user and the identity `($1, $2)` that signs in to it.
pub(crate) fn find_by_identity() -> &'static str {
    use std::sync::LazyLock;
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT {USER_COLUMNS}, i.issuer, i.subject, \
             i.created_at AS identity_created_at, i.last_login_at AS identity_last_login_at, \
             i.claims_fingerprint FROM jit_identities i JOIN jit_users u ON u.id = i.user_id \
             WHERE i.issuer = $1 AND i.subject = $2"
        )
    });
    &SQL
}

pub(crate) const TOMBSTONED: &str =
    "SELECT 1 AS found FROM jit_identity_tombstones WHERE issuer = $1 AND subject = $2";

/// Inserts an identity unless another transaction did first; returns a row when it won.
pub(crate) const CLAIM_IDENTITY: &str = "INSERT INTO jit_identities (issuer, subject, user_id, \
    claims_fingerprint, created_at, updated_at, last_login_at) \
    VALUES ($1, $2, $3, $4, $5, $5, $5) ON CONFLICT (issuer, subject) DO NOTHING RETURNING user_id";

/// An organisation's columns, in the order [`super::rows::organization_params`] binds them.
pub(crate) const INSERT_ORGANIZATION: &str = "INSERT INTO jit_organizations (id, name, document, \
    version, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6)";

pub(crate) const UPDATE_ORGANIZATION: &str = "UPDATE jit_organizations SET name = $2, \
    document = $3, version = $4, created_at = $5, updated_at = $6 WHERE id = $1";

pub(crate) const LIST_ORGANIZATIONS: &str = "SELECT document FROM jit_organizations ORDER BY id";

pub(crate) const SELECT_ORGANIZATION: &str = "SELECT document FROM jit_organizations WHERE id = $1";

pub(crate) const DELETE_ORGANIZATION: &str = "DELETE FROM jit_organizations WHERE id = $1";

pub(crate) const DELETE_ORGANIZATION_DOMAINS: &str =
    "DELETE FROM jit_organization_domains WHERE organization_id = $1";

pub(crate) const DELETE_CONNECTIONS: &str =
    "DELETE FROM jit_connections WHERE organization_id = $1";

pub(crate) const INSERT_ORGANIZATION_DOMAIN: &str =
    "INSERT INTO jit_organization_domains (domain, organization_id) VALUES ($1, $2)";

pub(crate) const INSERT_CONNECTION: &str = "INSERT INTO jit_connections (id, organization_id, \
    issuer, tenant) VALUES ($1, $2, $3, $4)";

/// Records a legacy account's adoption; a unique violation when it was adopted before.
pub(crate) const INSERT_ADOPTION: &str = "INSERT INTO jit_legacy_adoptions (legacy_id, user_id, \
    issuer, subject, adopted_at) VALUES ($1, $2, $3, $4, $5)";

pub(crate) const LINKED_AT_ISSUER: &str = "SELECT EXISTS (SELECT 1 FROM jit_identities \
    WHERE user_id = $1 AND issuer = $2) AS linked";

pub(crate) const SET_LAST_LOGIN: &str = "UPDATE jit_users SET last_login_at = $1 WHERE id = $2";

pub(crate) const RECORD_IDENTITY_LOGIN: &str = "UPDATE jit_identities SET last_login_at = $1, \
    claims_fingerprint = COALESCE($2, claims_fingerprint), updated_at = $1 \
    WHERE issuer = $3 AND subject = $4 RETURNING user_id";

pub(crate) const IDENTITIES_OF: &str = "SELECT issuer, subject, user_id, created_at, \
    last_login_at, claims_fingerprint FROM jit_identities WHERE user_id = $1 \
    ORDER BY issuer, subject";

/// The columns of a user write, in the order [`super::rows::user_params`] binds them.
pub(crate) const INSERT_USER: &str = "INSERT INTO jit_users (id, email, email_verified, \
    user_name, display_name, given_name, family_name, picture, locale, roles, groups, \
    attributes, status, external_id, scim_attributes, scim_managed, version, created_at, \
    updated_at, last_login_at, organization_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
    $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)";

pub(crate) const UPDATE_USER: &str = "UPDATE jit_users SET email = $2, email_verified = $3, \
    user_name = $4, display_name = $5, given_name = $6, family_name = $7, picture = $8, \
    locale = $9, roles = $10, groups = $11, attributes = $12, status = $13, external_id = $14, \
    scim_attributes = $15, scim_managed = $16, version = $17, created_at = $18, \
    updated_at = $19, last_login_at = $20, organization_id = $21 WHERE id = $1 AND version = $22";

pub(crate) const TOMBSTONE_IDENTITIES: &str = "INSERT INTO jit_identity_tombstones (issuer, \
    subject, user_id, deleted_at) SELECT issuer, subject, user_id, $2 FROM jit_identities \
    WHERE user_id = $1 ON CONFLICT DO NOTHING";

pub(crate) const DELETE_USER: &str = "DELETE FROM jit_users WHERE id = $1";

/// The columns of a group write, in the order [`super::rows::group_params`] binds them.
pub(crate) const INSERT_GROUP: &str = "INSERT INTO jit_groups (id, display_name, external_id, \
    scim_attributes, version, created_at, updated_at, organization_id) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

pub(crate) const UPDATE_GROUP: &str = "UPDATE jit_groups SET display_name = $2, \
    external_id = $3, scim_attributes = $4, version = $5, created_at = $6, updated_at = $7, \
    organization_id = $8 WHERE id = $1 AND version = $9";

pub(crate) const GROUP_MEMBERS: &str = "SELECT user_id FROM jit_group_members WHERE group_id = $1";

pub(crate) const DELETE_MEMBERS: &str = "DELETE FROM jit_group_members WHERE group_id = $1";

pub(crate) const DELETE_GROUP: &str = "DELETE FROM jit_groups WHERE id = $1";

/// The columns of an audit record, in the order [`super::rows::audit_params`] binds them.
pub(crate) const INSERT_AUDIT: &str = "INSERT INTO jit_audit_events (at, kind, actor, issuer, \
    subject, user_id, reason, fields, source, trace) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

const AUDIT_COLUMNS: &str =
    "at, kind, actor, issuer, subject, user_id, reason, fields, source, trace";

pub(crate) fn audit_events(of_user: bool) -> &'static str {
    use std::sync::LazyLock;
    static ALL: LazyLock<String> =
        LazyLock::new(|| format!("SELECT {AUDIT_COLUMNS} FROM jit_audit_events ORDER BY id"));
    static OF_USER: LazyLock<String> = LazyLock::new(|| {
        format!("SELECT {AUDIT_COLUMNS} FROM jit_audit_events WHERE user_id = $1 ORDER BY id")
    });
    if of_user { &OF_USER } else { &ALL }
}

/// The columns of a session, in the order [`super::rows::session_params`] binds them.
pub(crate) const INSERT_SESSION: &str = "INSERT INTO jit_sessions (id_hash, user_id, issuer, \
    subject, sid, source, created_at, expires_at, idle_secs, last_seen_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

pub(crate) const SELECT_SESSION: &str = "SELECT id_hash, user_id, issuer, subject, sid, \
    source, created_at, expires_at, idle_secs, last_seen_at FROM jit_sessions WHERE id_hash = $1";

/// Last-seen times only move forward, whichever server's batch lands last.
pub(crate) const TOUCH_SESSION: &str =
    "UPDATE jit_sessions SET last_seen_at = $2 WHERE id_hash = $1 AND last_seen_at < $2";

pub(crate) const END_SESSION: &str =
    "DELETE FROM jit_sessions WHERE id_hash = $1 RETURNING user_id";

pub(crate) const END_SESSIONS_OF_SID: &str =
    "DELETE FROM jit_sessions WHERE issuer = $1 AND sid = $2 RETURNING user_id";

pub(crate) const END_SESSIONS_OF_SUBJECT: &str =
    "DELETE FROM jit_sessions WHERE issuer = $1 AND subject = $2 RETURNING user_id";

pub(crate) const END_SESSIONS_OF_USER: &str = "DELETE FROM jit_sessions WHERE user_id = $1";

pub(crate) const END_SESSIONS_OF_USER_RETURNING: &str =
    "DELETE FROM jit_sessions WHERE user_id = $1 RETURNING user_id";

/// The columns of a flow, in the order [`super::rows::flow_params`] binds them.
pub(crate) const INSERT_FLOW: &str = "INSERT INTO jit_login_flows (key_hash, binding_hash, kind, \
    data, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)";

pub(crate) const TAKE_FLOW: &str = "DELETE FROM jit_login_flows WHERE key_hash = $1 \
    RETURNING key_hash, binding_hash, kind, data, created_at, expires_at";

pub(crate) const CONSUME_ONCE: &str = "INSERT INTO jit_once (kind, key_hash, expires_at) \
    VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING key_hash";

pub(crate) const PURGE_SESSIONS: &str = "DELETE FROM jit_sessions WHERE expires_at < $1";
pub(crate) const PURGE_FLOWS: &str = "DELETE FROM jit_login_flows WHERE expires_at < $1";
pub(crate) const PURGE_ONCE: &str = "DELETE FROM jit_once WHERE expires_at < $1";

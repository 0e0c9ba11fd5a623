-- Browser sign-in: sessions (keyed by the SHA-256 of the cookie's id, never the id itself),
-- sign-in flows in progress (keyed by the SHA-256 of their `state` or request id, taken once),
-- and one-time keys that stop replays (logout token `jti`s, SAML assertion ids).

CREATE TABLE jit_sessions (
    id_hash       TEXT PRIMARY KEY NOT NULL,          -- hex SHA-256 of the cookie's id
    user_id       TEXT NOT NULL REFERENCES jit_users (id) ON DELETE CASCADE,
    issuer        TEXT NOT NULL,
    subject       TEXT NOT NULL,
    sid           TEXT,                               -- the issuer's session id
    source        TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    expires_at    TEXT NOT NULL,                      -- the absolute timeout
    idle_secs     INTEGER NOT NULL,
    last_seen_at  TEXT NOT NULL
) STRICT;

CREATE INDEX jit_sessions_user_id ON jit_sessions (user_id);
CREATE INDEX jit_sessions_issuer_sid ON jit_sessions (issuer, sid) WHERE sid IS NOT NULL;
CREATE INDEX jit_sessions_issuer_subject ON jit_sessions (issuer, subject);

CREATE TABLE jit_login_flows (
    key_hash      TEXT PRIMARY KEY NOT NULL,          -- hex SHA-256 of `state` / request id
    binding_hash  TEXT NOT NULL,                      -- hex SHA-256 of the browser's binding cookie
    kind          TEXT NOT NULL,
    data          TEXT NOT NULL,                      -- JSON
    created_at    TEXT NOT NULL,
    expires_at    TEXT NOT NULL
) STRICT;

CREATE TABLE jit_once (
    kind        TEXT NOT NULL,
    key_hash    TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    PRIMARY KEY (kind, key_hash)
) STRICT;

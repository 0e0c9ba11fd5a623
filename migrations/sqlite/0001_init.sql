-- Users, the identities that sign in to them, tombstones of deleted identities, audit events.
-- Every table is prefixed `jit_` so the schema can share a database with the application's.
-- Audit events and tombstones are written once and never updated, so they carry one time only.

CREATE TABLE jit_users (
    id              TEXT PRIMARY KEY NOT NULL,          -- UUID v7
    email           TEXT,
    email_lower     TEXT GENERATED ALWAYS AS (lower(email)) VIRTUAL,
    email_verified  INTEGER NOT NULL DEFAULT 0 CHECK (email_verified IN (0, 1)),
    user_name       TEXT,
    display_name    TEXT,
    given_name      TEXT,
    family_name     TEXT,
    picture         TEXT,
    locale          TEXT,
    roles           TEXT NOT NULL DEFAULT '[]',         -- JSON: [{"role", "source"}]
    groups          TEXT NOT NULL DEFAULT '[]',         -- JSON: ["name"]
    attributes      TEXT NOT NULL DEFAULT '{}',         -- JSON object
    status          TEXT NOT NULL
                    CHECK (status IN ('active', 'pending_approval', 'deactivated')),
    external_id     TEXT,
    version         INTEGER NOT NULL DEFAULT 1,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    last_login_at   TEXT
) STRICT;

CREATE UNIQUE INDEX jit_users_external_id ON jit_users (external_id) WHERE external_id IS NOT NULL;
CREATE INDEX jit_users_email_lower ON jit_users (email_lower) WHERE email_verified = 1;
CREATE INDEX jit_users_user_name ON jit_users (user_name COLLATE NOCASE);

CREATE TABLE jit_identities (
    issuer              TEXT NOT NULL,
    subject             TEXT NOT NULL,
    user_id             TEXT NOT NULL REFERENCES jit_users (id) ON DELETE CASCADE,
    claims_fingerprint  TEXT,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL,
    last_login_at       TEXT,
    PRIMARY KEY (issuer, subject)
) STRICT;

CREATE INDEX jit_identities_user_id ON jit_identities (user_id);

-- Identities of deleted users: never provisioned again.
CREATE TABLE jit_identity_tombstones (
    issuer      TEXT NOT NULL,
    subject     TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    deleted_at  TEXT NOT NULL,
    PRIMARY KEY (issuer, subject)
) STRICT;

CREATE TABLE jit_audit_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          TEXT NOT NULL,
    kind        TEXT NOT NULL,
    actor       TEXT NOT NULL,                          -- JSON
    issuer      TEXT,
    subject     TEXT,
    user_id     TEXT,
    reason      TEXT,
    fields      TEXT NOT NULL DEFAULT '[]'              -- JSON array
) STRICT;

CREATE INDEX jit_audit_events_user_id ON jit_audit_events (user_id);

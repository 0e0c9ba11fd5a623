-- Users, the identities that sign in to them, tombstones of deleted identities, audit events.
-- Every table is prefixed `jit_` so the schema can share a database with the application's.
-- Audit events and tombstones are written once and never updated, so they carry one time only.

CREATE TABLE jit_users (
    id              UUID PRIMARY KEY,                   -- UUID v7
    email           TEXT,
    email_verified  BOOLEAN NOT NULL DEFAULT false,
    user_name       TEXT,
    display_name    TEXT,
    given_name      TEXT,
    family_name     TEXT,
    picture         TEXT,
    locale          TEXT,
    roles           JSONB NOT NULL DEFAULT '[]',        -- [{"role", "source"}]
    groups          JSONB NOT NULL DEFAULT '[]',        -- ["name"]
    attributes      JSONB NOT NULL DEFAULT '{}',
    status          TEXT NOT NULL
                    CHECK (status IN ('active', 'pending_approval', 'deactivated')),
    external_id     TEXT,
    version         BIGINT NOT NULL DEFAULT 1,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    last_login_at   TIMESTAMPTZ
);

CREATE UNIQUE INDEX jit_users_external_id ON jit_users (external_id) WHERE external_id IS NOT NULL;
CREATE INDEX jit_users_email_lower ON jit_users (lower(email)) WHERE email_verified;
CREATE INDEX jit_users_user_name ON jit_users (lower(user_name));

CREATE TABLE jit_identities (
    issuer              TEXT NOT NULL,
    subject             TEXT NOT NULL,
    user_id             UUID NOT NULL REFERENCES jit_users (id) ON DELETE CASCADE,
    claims_fingerprint  TEXT,
    created_at          TIMESTAMPTZ NOT NULL,
    updated_at          TIMESTAMPTZ NOT NULL,
    last_login_at       TIMESTAMPTZ,
    PRIMARY KEY (issuer, subject)
);

CREATE INDEX jit_identities_user_id ON jit_identities (user_id);

-- Identities of deleted users: never provisioned again.
CREATE TABLE jit_identity_tombstones (
    issuer      TEXT NOT NULL,
    subject     TEXT NOT NULL,
    user_id     UUID NOT NULL,
    deleted_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (issuer, subject)
);

CREATE TABLE jit_audit_events (
    id          BIGSERIAL PRIMARY KEY,
    at          TIMESTAMPTZ NOT NULL,
    kind        TEXT NOT NULL,
    actor       JSONB NOT NULL,
    issuer      TEXT,
    subject     TEXT,
    user_id     UUID,
    reason      TEXT,
    fields      JSONB NOT NULL DEFAULT '[]'
);

CREATE INDEX jit_audit_events_user_id ON jit_audit_events (user_id);

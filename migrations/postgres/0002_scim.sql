-- SCIM: attributes without a column of their own, which columns SCIM has set, unique login
-- names, and groups with their members.

ALTER TABLE jit_users ADD COLUMN scim_attributes JSONB NOT NULL DEFAULT '{}';
ALTER TABLE jit_users ADD COLUMN scim_managed JSONB NOT NULL DEFAULT '[]';

DROP INDEX jit_users_user_name;
CREATE UNIQUE INDEX jit_users_user_name ON jit_users (lower(user_name))
    WHERE user_name IS NOT NULL;

CREATE TABLE jit_groups (
    id               UUID PRIMARY KEY,
    display_name     TEXT NOT NULL,
    external_id      TEXT,
    scim_attributes  JSONB NOT NULL DEFAULT '{}',
    version          BIGINT NOT NULL DEFAULT 1,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL
);

CREATE UNIQUE INDEX jit_groups_display_name ON jit_groups (lower(display_name));
CREATE UNIQUE INDEX jit_groups_external_id ON jit_groups (external_id) WHERE external_id IS NOT NULL;

CREATE TABLE jit_group_members (
    group_id    UUID NOT NULL REFERENCES jit_groups (id) ON DELETE CASCADE,
    user_id     UUID NOT NULL REFERENCES jit_users (id) ON DELETE CASCADE,
    created_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (group_id, user_id)
);

CREATE INDEX jit_group_members_user_id ON jit_group_members (user_id);

-- SCIM: attributes without a column of their own, which columns SCIM has set, unique login
-- names, and groups with their members.

ALTER TABLE jit_users ADD COLUMN scim_attributes TEXT NOT NULL DEFAULT '{}';  -- JSON object
ALTER TABLE jit_users ADD COLUMN scim_managed TEXT NOT NULL DEFAULT '[]';     -- JSON array

DROP INDEX jit_users_user_name;
CREATE UNIQUE INDEX jit_users_user_name ON jit_users (user_name COLLATE NOCASE)
    WHERE user_name IS NOT NULL;

CREATE TABLE jit_groups (
    id               TEXT PRIMARY KEY NOT NULL,     -- UUID v7
    display_name     TEXT NOT NULL,
    external_id      TEXT,
    scim_attributes  TEXT NOT NULL DEFAULT '{}',    -- JSON object
    version          INTEGER NOT NULL DEFAULT 1,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
) STRICT;

CREATE UNIQUE INDEX jit_groups_display_name ON jit_groups (display_name COLLATE NOCASE);
CREATE UNIQUE INDEX jit_groups_external_id ON jit_groups (external_id) WHERE external_id IS NOT NULL;

CREATE TABLE jit_group_members (
    group_id    TEXT NOT NULL REFERENCES jit_groups (id) ON DELETE CASCADE,
    user_id     TEXT NOT NULL REFERENCES jit_users (id) ON DELETE CASCADE,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (group_id, user_id)
) STRICT;

CREATE INDEX jit_group_members_user_id ON jit_group_members (user_id);

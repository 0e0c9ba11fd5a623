-- Organisations that bring their own identity provider. The document holds what the
-- application configured (domains, connections); the two index tables make each e-mail domain
-- and each connection (an issuer and a tenant of it) belong to one organisation only. An
-- account's organisation is set when it is created and never changes.

CREATE TABLE jit_organizations (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    document    TEXT NOT NULL,                          -- JSON: the whole Organization
    version     INTEGER NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
) STRICT;

CREATE TABLE jit_organization_domains (
    domain           TEXT PRIMARY KEY NOT NULL,
    organization_id  TEXT NOT NULL REFERENCES jit_organizations (id) ON DELETE CASCADE
) STRICT;

CREATE TABLE jit_connections (
    id               TEXT PRIMARY KEY NOT NULL,
    organization_id  TEXT NOT NULL REFERENCES jit_organizations (id) ON DELETE CASCADE,
    issuer           TEXT NOT NULL,
    tenant           TEXT NOT NULL                      -- '' for an issuer of one tenant
) STRICT;

CREATE UNIQUE INDEX jit_connections_issuer ON jit_connections (issuer, tenant);
CREATE INDEX jit_connections_organization_id ON jit_connections (organization_id);
CREATE INDEX jit_organization_domains_organization_id ON jit_organization_domains (organization_id);

ALTER TABLE jit_groups ADD COLUMN organization_id TEXT;
ALTER TABLE jit_users ADD COLUMN organization_id TEXT;
CREATE INDEX jit_users_organization_id ON jit_users (organization_id)
    WHERE organization_id IS NOT NULL;

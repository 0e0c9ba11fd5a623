-- Organisations that bring their own identity provider. The document holds what the
-- application configured (domains, connections); the two index tables make each e-mail domain
-- and each connection (an issuer and a tenant of it) belong to one organisation only. An
-- account's organisation is set when it is created and never changes.

CREATE TABLE jit_organizations (
    id          UUID PRIMARY KEY,
    name        TEXT NOT NULL,
    document    JSONB NOT NULL,                         -- the whole Organization
    version     BIGINT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE jit_organization_domains (
    domain           TEXT PRIMARY KEY,
    organization_id  UUID NOT NULL REFERENCES jit_organizations (id) ON DELETE CASCADE
);

CREATE TABLE jit_connections (
    id               UUID PRIMARY KEY,
    organization_id  UUID NOT NULL REFERENCES jit_organizations (id) ON DELETE CASCADE,
    issuer           TEXT NOT NULL,
    tenant           TEXT NOT NULL                      -- '' for an issuer of one tenant
);

CREATE UNIQUE INDEX jit_connections_issuer ON jit_connections (issuer, tenant);
CREATE INDEX jit_connections_organization_id ON jit_connections (organization_id);
CREATE INDEX jit_organization_domains_organization_id ON jit_organization_domains (organization_id);

ALTER TABLE jit_groups ADD COLUMN organization_id UUID;
ALTER TABLE jit_users ADD COLUMN organization_id UUID;
CREATE INDEX jit_users_organization_id ON jit_users (organization_id)
    WHERE organization_id IS NOT NULL;

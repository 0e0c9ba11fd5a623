-- Which sign-in source an audited event came through (`bearer_jwt`, `browser_oidc`, `saml`,
-- `oauth2`, `introspection`, or an application's own); NULL for events no sign-in caused and
-- for events written before this migration.

ALTER TABLE jit_audit_events ADD COLUMN source TEXT;

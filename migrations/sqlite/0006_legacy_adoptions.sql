-- Legacy accounts adopted by a first sign-in while migrating from another system: each at most
-- once, ever. No reference to jit_users: the record outlives the account it went to, so that a
-- deleted account's legacy account is not adopted again.

CREATE TABLE jit_legacy_adoptions (
    legacy_id   TEXT PRIMARY KEY NOT NULL,
    user_id     TEXT NOT NULL,
    issuer      TEXT NOT NULL,
    subject     TEXT NOT NULL,
    adopted_at  TEXT NOT NULL
) STRICT;

CREATE INDEX jit_legacy_adoptions_user_id ON jit_legacy_adoptions (user_id);

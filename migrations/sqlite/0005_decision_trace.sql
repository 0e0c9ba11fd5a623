-- The decision trace a refused sign-in's `denied` event carries: the rules consulted, ending in
-- the one that refused. JSON `null` for every other event and for events written before this
-- migration.

ALTER TABLE jit_audit_events ADD COLUMN trace TEXT NOT NULL DEFAULT 'null';

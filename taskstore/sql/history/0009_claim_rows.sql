-- Migration 0009_claim_rows (Postgres only; never edited once shipped).
-- The group-commit batches take typed arrays instead of a jsonb array and answer rows: their arguments change,
-- so the old ones are dropped here and functions.sql (installed next) defines them once instead of adding an
-- overload.
DROP FUNCTION IF EXISTS agentq_claim_many(jsonb);
DROP FUNCTION IF EXISTS agentq_complete_many(jsonb);

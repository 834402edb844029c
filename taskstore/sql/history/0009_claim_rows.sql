-- Migration 0009_claim_rows (Postgres only; never edited once shipped).
-- The claims answer rows (task, agent, steps) instead of a built jsonb, and the group-commit batches take typed
-- arrays instead of a jsonb array: their result types and arguments change, so they are dropped here and
-- functions.sql (installed next) defines them once instead of adding an overload.
DROP FUNCTION IF EXISTS agentq_claim(uuid, uuid, text, timestamptz, timestamptz, integer);
DROP FUNCTION IF EXISTS agentq_claim_many(jsonb);
DROP FUNCTION IF EXISTS agentq_complete_many(jsonb);

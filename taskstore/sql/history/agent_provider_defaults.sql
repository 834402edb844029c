ALTER TABLE ai_agents ALTER COLUMN provider SET DEFAULT 'openai';
ALTER TABLE ai_agents ALTER COLUMN model SET DEFAULT 'gpt-4o-mini';

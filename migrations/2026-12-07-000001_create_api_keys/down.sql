ALTER TABLE dlq_redrives DROP COLUMN actor;
ALTER TABLE replay_audit DROP COLUMN actor;
DROP TABLE api_keys;

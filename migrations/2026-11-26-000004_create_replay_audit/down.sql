DROP TABLE dlq_redrives; DROP TABLE replay_audit;

DROP TABLE sync_logs;
DROP TABLE call_logs;
DROP TABLE call_dispositions;

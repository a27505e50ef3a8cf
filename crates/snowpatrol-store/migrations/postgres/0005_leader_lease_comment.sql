-- The leader lease, documented for operators reading the table.

COMMENT ON TABLE scheduler_leases IS 'Time-bound leases: `scheduler-leader` is the leader lease on both backends (renewed every tick, judged by the database clock on PostgreSQL, taken over once expired).';

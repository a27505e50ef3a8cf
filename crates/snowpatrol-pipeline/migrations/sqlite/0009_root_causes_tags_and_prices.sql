-- Root causes of anomalous days, the warehouses' object tags (for routing) and the effective price of a credit
-- per account and day (for money). See the PostgreSQL migration for the tables' meaning.

CREATE TABLE root_causes (
    account_name   TEXT NOT NULL,
    warehouse_name TEXT NOT NULL,
    usage_date     TEXT NOT NULL,
    summary        TEXT NOT NULL,
    detail         TEXT NOT NULL,
    looked_up_at   TEXT NOT NULL,
    run_id         INTEGER,
    PRIMARY KEY (account_name, warehouse_name, usage_date)
);

CREATE TABLE warehouse_tags (
    account_name   TEXT NOT NULL,
    warehouse_name TEXT NOT NULL,
    tag_name       TEXT NOT NULL,
    tag_value      TEXT NOT NULL,
    looked_up_at   TEXT NOT NULL,
    PRIMARY KEY (account_name, warehouse_name, tag_name)
);

CREATE TABLE credit_rates (
    account_name TEXT NOT NULL,
    usage_date   TEXT NOT NULL,
    currency     TEXT NOT NULL,
    credits      REAL NOT NULL,
    amount       REAL NOT NULL,
    PRIMARY KEY (account_name, usage_date)
);

-- Root causes of anomalous days, the warehouses' object tags (for routing) and the effective price of a credit
-- per account and day (for money). New tables only: nothing existing changes.

CREATE TABLE root_causes (
    account_name   text        NOT NULL,
    warehouse_name text        NOT NULL,
    usage_date     date        NOT NULL,
    summary        text        NOT NULL,
    detail         jsonb       NOT NULL,
    looked_up_at   timestamptz NOT NULL,
    run_id         bigint,
    PRIMARY KEY (account_name, warehouse_name, usage_date)
);
COMMENT ON TABLE root_causes IS 'One row per anomalous (account, warehouse, day): what Snowflake''s ACCOUNT_USAGE views (QUERY_ATTRIBUTION_HISTORY, QUERY_HISTORY, WAREHOUSE_EVENTS_HISTORY) and the hourly metering say about it. `summary` is the sentence shown in reports, Slack and the console; `detail` the findings (top statements, users, roles, query tags, events, ALTER WAREHOUSE changes, hourly shape, what could not be read and why). Written by predict''s root_causes task (run_id), once per day.';

CREATE TABLE warehouse_tags (
    account_name   text        NOT NULL,
    warehouse_name text        NOT NULL,
    tag_name       text        NOT NULL,
    tag_value      text        NOT NULL,
    looked_up_at   timestamptz NOT NULL,
    PRIMARY KEY (account_name, warehouse_name, tag_name)
);
COMMENT ON TABLE warehouse_tags IS 'Snowflake object tags of warehouses with incidents (ACCOUNT_USAGE.TAG_REFERENCES), tag_name as DATABASE.SCHEMA.TAG; [[pipeline.alerts.routes]] tags = {...} match them. Replaced per warehouse on each lookup.';

CREATE TABLE credit_rates (
    account_name text             NOT NULL,
    usage_date   date             NOT NULL,
    currency     text             NOT NULL,
    credits      double precision NOT NULL,
    amount       double precision NOT NULL,
    PRIMARY KEY (account_name, usage_date)
);
COMMENT ON TABLE credit_rates IS 'Compute usage in credits and in the contract currency per account and day (ORGANIZATION_USAGE.USAGE_IN_CURRENCY_DAILY), loaded by prep when [pipeline] credit_prices = "snowflake"; amount / credits is the effective price of a credit.';

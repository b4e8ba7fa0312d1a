-- Provisioning names another module's relations only where that module published them:
-- the foreign keys to customers.products go (customers' table is its own to change).
-- A product code is checked by the service, through customers.product_exists, when a
-- plan is added and when an order is accepted.
alter table provisioning.plan_commands drop constraint plan_commands_product_code_fkey;
alter table provisioning.orders drop constraint orders_product_code_fkey;
alter table provisioning.service_records drop constraint service_records_product_code_fkey;

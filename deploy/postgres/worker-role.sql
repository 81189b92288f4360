-- The PostgreSQL role adworker run needs, and nothing more: insert and read its two tables
-- (read for the idempotent path's conflict check and adworker stats), create temporary tables
-- (the idempotent path's staging table). Migrations run as the tables' owner, not as this role.
-- psql -v role=adworker_worker -v password=... -v database=adworker -f deploy/postgres/worker-role.sql
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'role', :'password')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') \gexec
SELECT format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO %I', :'database', :'role') \gexec
SELECT format('GRANT USAGE ON SCHEMA public TO %I', :'role') \gexec
SELECT format('GRANT SELECT, INSERT ON training_data, inference_results TO %I', :'role') \gexec
